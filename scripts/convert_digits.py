#!/usr/bin/python3
"""Convert scikit-learn's 8x8 digits to the plain CSV that examples/train_toy reads.

Usage:
    /usr/bin/python3 scripts/convert_digits.py [INPUT [OUT]]

INPUT  the digits.csv.gz that scikit-learn ships (Debian: apt-get install python3-sklearn);
       default /usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz.
OUT    the CSV to write; default data/digits.csv under the repository root (the folder
       above scripts/), whatever the working directory. Its folder is created.

OUT has one row per image and no header: 65 integer columns, the 64 pixels of the 8x8
image row by row (each 0..16), then the label (0..9). scikit-learn's file has 1797 rows
(174 to 183 per digit); this script writes all of them, in the same order, and checks
every value on the way. examples/train_toy/tasks.hpp (ssmdyn::toy::digits_task) reads OUT,
by default from $SSMDYN_DIGITS or data/digits.csv (see default_digits_path there).

Only the standard library is used (gzip, csv): no scikit-learn, no NumPy. Exit code 1,
with a message, when INPUT is absent or malformed.
"""

import csv
import gzip
import os
import sys

DEFAULT_INPUT = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "data", "digits.csv")
EXPECTED_ROWS = 1797


def fail(message):
    print(f"convert_digits: {message}", file=sys.stderr)
    sys.exit(1)


def as_int(text, path, line, column):
    """An integer-valued field ('5' or '5.0'), else exit 1 naming the place."""
    try:
        value = float(text)
    except ValueError:
        fail(f"{path}:{line}: column {column}: not a number: {text!r}")
    if value != int(value):
        fail(f"{path}:{line}: column {column}: not an integer: {text!r}")
    return int(value)


def read_rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", newline="") as f:
            for line, fields in enumerate(csv.reader(f), start=1):
                if not fields:
                    continue
                if len(fields) != 65:
                    fail(f"{path}:{line}: expected 65 columns (64 pixels and the label), got {len(fields)}")
                row = [as_int(t, path, line, c + 1) for c, t in enumerate(fields)]
                if any(not 0 <= p <= 16 for p in row[:64]):
                    fail(f"{path}:{line}: a pixel outside 0..16")
                if not 0 <= row[64] <= 9:
                    fail(f"{path}:{line}: label {row[64]} outside 0..9")
                rows.append(row)
    except (OSError, EOFError, csv.Error) as e:
        fail(f"cannot read {path}: {e}")
    return rows


def main(argv):
    if len(argv) > 3 or any(a in ("-h", "--help") for a in argv[1:]):
        print(__doc__)
        return 0 if len(argv) <= 3 else 1
    src = argv[1] if len(argv) > 1 else DEFAULT_INPUT
    out = argv[2] if len(argv) > 2 else DEFAULT_OUT
    if not os.path.isfile(src):
        fail(f"input {src} not found: install scikit-learn's data (Debian: apt-get install python3-sklearn) "
             "or give the path of digits.csv.gz as the first argument")
    rows = read_rows(src)
    if not rows:
        fail(f"{src}: no rows")
    if len(rows) != EXPECTED_ROWS:
        print(f"convert_digits: note: {src} has {len(rows)} rows, scikit-learn's has {EXPECTED_ROWS}", file=sys.stderr)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerows(rows)
    print(f"convert_digits: wrote {len(rows)} rows (64 pixels 0..16 and the label) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
