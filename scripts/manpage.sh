#!/usr/bin/env bash
# Regenerate docs/snapstream.1 from the help texts in cli/help.c (the same
# text `snapstream --help` prints). The 'manpage' test fails until the
# committed page matches.
# Usage: scripts/manpage.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
"${1:-build}/cli/snapstream" help --man >docs/snapstream.1.tmp
mv docs/snapstream.1.tmp docs/snapstream.1
echo "wrote docs/snapstream.1"
