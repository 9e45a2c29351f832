// Package clocale keeps fyne quiet under the C locale. fyne's lang package reads the locale
// from the environment when it initialises, before main, through go-locale, which takes
// LANG=C.UTF-8 (any C.<codeset> or POSIX.<codeset>, unlike plain C) as the language "C" and
// fyne then prints "Error parsing user locale C" at every start.
//
// Importing this package (for its side effect) from the tray's main package sets LANGUAGE=en
// when the locale is C or POSIX with a codeset and LANGUAGE is unset: English, the language of
// the C locale's messages, so the tray and the programs it starts show what they showed. The
// locale itself, and with it the codeset, stays as it was.
//
// Go initialises the packages of a program in the order of their import paths, each once all
// it imports is: this package imports only the standard library, so it runs before
// golang.org/x/text/language, which fyne's lang package waits for. The tray's binary test
// checks that the error is not printed.
package clocale
