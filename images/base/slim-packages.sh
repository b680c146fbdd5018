#!/bin/sh
# Trim installed Python packages under DIR to what runs: no test suites, no C/Cython sources,
# headers or type stubs, and extension modules stripped of symbols they do not need to load.
# The wheels' vendored libraries (*.libs/, patched by auditwheel) are left alone: strip breaks
# their layout ("ELF load command address/offset not page-aligned").
# Build stages only (needs binutils' strip). Measured on the step images: see benchmarks/RESULTS.md.
#   images/base/slim-packages.sh /opt/venv
set -eu
dir=$1
find "$dir" -type d -name tests -path '*/site-packages/*/tests' -prune -exec rm -rf {} +
find "$dir" -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.pyx' \
     -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' \) -path '*/site-packages/*' -delete
find "$dir" -type f -name '*.cpython-*.so' -path '*/site-packages/*' -exec strip --strip-unneeded {} +
