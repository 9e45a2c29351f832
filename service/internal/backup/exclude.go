package backup

import (
	"bufio"
	"bytes"
	"path"
	"strings"
)

// DefaultExcludes are skipped unless a job says otherwise: pseudo and volatile filesystems,
// caches and trash. Patterns without a slash match a name at any depth; patterns starting
// with "/" match the absolute source path (and everything below a matching directory).
var DefaultExcludes = []string{
	"/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/cache", "/mnt", "/media",
	"/var/lib/docker", "/swapfile", "/home/*/.cache", "/root/.cache",
	"/home/*/.local/share/Trash", "/root/.local/share/Trash", ".Trash-*", ".thumbnails",
	"lost+found",
}

// IgnoreFile is a per-directory list of glob patterns (one per line, # comments) excluded
// below the directory that holds it.
const IgnoreFile = ".plugvault-ignore"

// cacheDirSignature starts a valid CACHEDIR.TAG (https://bford.info/cachedir/).
const cacheDirSignature = "Signature: 8a477f597d28d172789f06886806bc55"

// excluder decides what the walk skips.
type excluder struct {
	names []string // match the base name
	paths []string // match the absolute path
}

func newExcluder(patterns []string) *excluder {
	x := &excluder{}
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if strings.HasPrefix(p, "/") {
			x.paths = append(x.paths, path.Clean(p))
		} else if !strings.Contains(p, "/") {
			x.names = append(x.names, p)
		} else {
			// A relative pattern with a slash matches below any directory.
			x.paths = append(x.paths, "/**/"+strings.TrimSuffix(p, "/"))
		}
	}
	return x
}

// excluded reports whether the entry at absolute path abs with base name name is skipped.
func (x *excluder) excluded(abs, name string) bool {
	for _, p := range x.names {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	for _, p := range x.paths {
		if matchPath(p, abs) {
			return true
		}
	}
	return false
}

// matchPath matches a "/"-anchored glob against an absolute path; a leading "/**/" matches
// any number of leading directories.
func matchPath(pattern, abs string) bool {
	if rest, ok := strings.CutPrefix(pattern, "/**/"); ok {
		n := strings.Count(rest, "/") + 1
		parts := strings.Split(strings.TrimPrefix(abs, "/"), "/")
		if len(parts) < n {
			return false
		}
		ok, _ := path.Match(rest, strings.Join(parts[len(parts)-n:], "/"))
		return ok
	}
	if strings.Count(pattern, "/") != strings.Count(abs, "/") {
		return false
	}
	ok, _ := path.Match(pattern, abs)
	return ok
}

// parseIgnore turns a .plugvault-ignore file in directory dirAbs into patterns: names stay
// name patterns below it; patterns with a slash are anchored at dirAbs.
func parseIgnore(dirAbs string, data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		p = strings.TrimSuffix(p, "/")
		if strings.Contains(p, "/") {
			out = append(out, path.Join(dirAbs, p))
		} else {
			out = append(out, path.Join(dirAbs, "**", p))
		}
	}
	return out
}

// scopedExcluder is an excluder plus patterns inherited from .plugvault-ignore files.
type scopedExcluder struct {
	base  *excluder
	local []string // absolute patterns; "<dir>/**/<name>" means name anywhere below dir
}

func (s *scopedExcluder) excluded(abs, name string) bool {
	if s.base.excluded(abs, name) {
		return true
	}
	for _, p := range s.local {
		if i := strings.Index(p, "/**/"); i >= 0 {
			dir, pat := p[:i], p[i+4:]
			if strings.HasPrefix(abs, dir+"/") {
				if ok, _ := path.Match(pat, name); ok {
					return true
				}
			}
			continue
		}
		if matchPath(p, abs) {
			return true
		}
	}
	return false
}

func (s *scopedExcluder) with(patterns []string) *scopedExcluder {
	if len(patterns) == 0 {
		return s
	}
	return &scopedExcluder{base: s.base, local: append(append([]string(nil), s.local...), patterns...)}
}
