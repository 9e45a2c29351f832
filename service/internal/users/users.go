package users

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// timeout bounds one getent run (an NSS server that does not answer must not hang a call).
const timeout = 20 * time.Second

// getentNotFound is getent's exit status for "key not found in database".
const getentNotFound = 2

// Resolver runs getent through Runner. The zero value runs the real getent.
type Resolver struct {
	// Runner defaults to sysexec.Exec.
	Runner sysexec.Runner
	// Getent is getent's absolute path; "" looks it up in sysexec's fixed search path.
	Getent string
}

var (
	getentOnce sync.Once
	getentPath string
	getentErr  error
)

func (r Resolver) run(ctx context.Context, args ...string) ([]byte, error) {
	path := r.Getent
	if path == "" {
		getentOnce.Do(func() { getentPath, getentErr = sysexec.LookPath("getent") })
		if getentErr != nil {
			return nil, getentErr
		}
		path = getentPath
	}
	runner := r.Runner
	if runner == nil {
		runner = sysexec.Exec{}
	}
	res, err := runner.Run(ctx, sysexec.Cmd{Path: path, Args: args, Timeout: timeout})
	return res.Stdout, err
}

// validName accepts what getent can only read as a name: not empty, no leading "-" (an
// option), no ":" (the field separator), no space or control characters, at most 256 bytes.
func validName(name string) bool {
	if name == "" || len(name) > 256 || name[0] == '-' || strings.Contains(name, ":") {
		return false
	}
	for _, c := range name {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return false
		}
	}
	return true
}

// Lookup returns the user called name. An unknown user is a user.UnknownUserError.
func (r Resolver) Lookup(ctx context.Context, name string) (*user.User, error) {
	if !validName(name) {
		return nil, user.UnknownUserError(name)
	}
	u, err := r.passwd(ctx, name)
	if errors.Is(err, errNotFound) || err == nil && u.Username != name {
		return nil, user.UnknownUserError(name)
	}
	return u, err
}

// LookupID returns the user with the given uid. An unknown uid is a user.UnknownUserIdError.
func (r Resolver) LookupID(ctx context.Context, uid uint32) (*user.User, error) {
	id := strconv.FormatUint(uint64(uid), 10)
	u, err := r.passwd(ctx, id)
	if errors.Is(err, errNotFound) || err == nil && u.Uid != id {
		return nil, user.UnknownUserIdError(int(uid))
	}
	return u, err
}

var errNotFound = errors.New("not found")

// passwd runs getent passwd KEY and parses its one line (name:x:uid:gid:gecos:home:shell).
func (r Resolver) passwd(ctx context.Context, key string) (*user.User, error) {
	out, err := r.run(ctx, "passwd", key)
	var ee *sysexec.ExitError
	if errors.As(err, &ee) && ee.Code == getentNotFound {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("cannot look up user %q: %w", key, err)
	}
	line, _, _ := strings.Cut(strings.TrimRight(string(out), "\n"), "\n")
	f := strings.Split(line, ":")
	if len(f) != 7 {
		return nil, fmt.Errorf("cannot look up user %q: getent printed %q", key, line)
	}
	for _, id := range f[2:4] {
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return nil, fmt.Errorf("cannot look up user %q: bad id %q", key, id)
		}
	}
	return &user.User{Username: f[0], Uid: f[2], Gid: f[3], Name: f[4], HomeDir: f[5]}, nil
}

// GroupIDs returns the groups of the user called name as initgroups(3) would set them: its
// primary group gid first, then every group NSS lists it in (getent initgroups).
func (r Resolver) GroupIDs(ctx context.Context, name string, gid uint32) ([]uint32, error) {
	if !validName(name) {
		return nil, user.UnknownUserError(name)
	}
	out, err := r.run(ctx, "initgroups", name)
	var ee *sysexec.ExitError
	if errors.As(err, &ee) && ee.Code == getentNotFound {
		return nil, user.UnknownUserError(name)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list the groups of %q: %w", name, err)
	}
	// "alice                 1000 24 100": the name, then the gids.
	f := strings.Fields(strings.TrimSpace(string(out)))
	if len(f) == 0 || f[0] != name {
		return nil, fmt.Errorf("cannot list the groups of %q: getent printed %q", name, out)
	}
	ids := []uint32{gid}
	for _, s := range f[1:] {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("cannot list the groups of %q: bad gid %q", name, s)
		}
		if uint32(g) != gid {
			ids = append(ids, uint32(g))
		}
	}
	return ids, nil
}

// Default is the real resolver.
var Default Resolver

// Lookup is Default.Lookup with its own timeout, for callers without a context (config
// validation).
func Lookup(name string) (*user.User, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return Default.Lookup(ctx, name)
}
