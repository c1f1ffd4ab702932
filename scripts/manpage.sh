#!/usr/bin/env bash
# Regenerate docs/snapstream.1 from the help texts in cli/help.c (the same
# text `snapstream --help` prints). The version in its title line becomes
# @VERSION@, which meson fills in from its project version when it installs
# the page. The cli-admin test fails until the committed page matches.
# Usage: scripts/manpage.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
"${1:-build}/cli/snapstream" help --man |
	sed '2s/"snapstream [^"]*"/"snapstream @VERSION@"/' >docs/snapstream.1.tmp
mv docs/snapstream.1.tmp docs/snapstream.1
echo "wrote docs/snapstream.1"
