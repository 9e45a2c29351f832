#!/bin/sh
# version.sh VERSION: the Debian version for a build whose `git describe` is VERSION.
# A tag v1.2.0 gives 1.2.0; three commits later, 1.2.0+3+gabc1234; an untagged tree gives
# 0.0~git<commits>+<hash> (so later commits sort higher); a dirty tree adds +dirty.
set -eu
v=${1#v}
case $v in
[0-9]*.*) ;;
*) v="0.0~git$(git rev-list --count HEAD 2>/dev/null || echo 0)+$v" ;;
esac
printf '%s\n' "$v" | tr -- '-' '+'
