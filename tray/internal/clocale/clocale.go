package clocale

import (
	"os"
	"strings"
)

func init() {
	if lang, ok := Language(os.Getenv); ok {
		os.Setenv("LANGUAGE", lang)
	}
}

// Language returns the LANGUAGE to set for the environment that getenv reads: "en" when
// LANGUAGE is unset and the locale that names the messages' language (the first of LC_ALL,
// LC_MESSAGES and LANG that is set) is C or POSIX with a codeset or modifier, such as C.UTF-8.
// Plain C and POSIX need nothing: go-locale reads them as "no language".
func Language(getenv func(string) string) (string, bool) {
	if getenv("LANGUAGE") != "" {
		return "", false
	}
	for _, name := range []string{"LC_ALL", "LC_MESSAGES", "LANG"} {
		v := getenv(name)
		if v == "" {
			continue
		}
		lang := v
		if i := strings.IndexAny(v, ".@"); i >= 0 {
			lang = v[:i]
		}
		if (lang == "C" || lang == "POSIX") && lang != v {
			return "en", true
		}
		return "", false
	}
	return "", false
}
