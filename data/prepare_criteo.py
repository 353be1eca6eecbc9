#!/usr/bin/env python
"""Prepare the Criteo Kaggle train.txt as DeepRec-format train.csv and eval.csv.

Why: the full data set (45,840,617 rows, ~11 GB, 7 days in time order) is too
big to load, and a random split would leak the future into training.  This
script streams it (constant memory), keeps time order, and holds out the
last --eval_fraction of the rows (default 1/7: the last day) for evaluation.

    python data/prepare_criteo.py --input ~/criteo/train.txt            # -> data/criteo/
    python data/prepare_criteo.py --input ~/criteo/dac.tar.gz --max_rows 1000000

The input may be plain, gzip (.gz) or the original archive (.tar.gz / .tgz,
whose train.txt member is read).  A first pass counts the lines; the second
converts tabs to commas and checks every line as the models will read it
(modelzoo/datafiles.py): 40 fields, a 0/1 label, integers of at most 18 digits
in I1..I13, valid UTF-8 without NUL bytes, and no comma inside a field; every
carriage return is dropped, as tf.data's TextLineDataset drops it (CRLF line
ends).  A bad line stops the run with the file and line number (or, with
--bad_rows skip, is skipped and counted), so a prepared file trains in either
--bad_rows mode.  A truncated or corrupt input is named.  Outputs are written to
temporary files and renamed only when complete, so an interrupted run never
leaves a half-written train.csv or eval.csv behind.
"""
import argparse
import gzip
import os
import re
import signal
import sys
import tarfile
import tempfile
import time
import zlib
from contextlib import contextmanager
from fractions import Fraction
from itertools import repeat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from modelzoo.datafiles import INT_PATTERN, row_problem  # noqa: E402
from modelzoo.schema import load_schema  # noqa: E402

FIELDS = 40
SCHEMA = load_schema('criteo')
# The label and I1..I13 as the models accept them, matched at the start of each line (about 1.5 us a
# line, most of the checks' cost); the text fields C1..C26 are checked for a whole block at once (no
# comma or NUL byte, valid UTF-8), which is what datafiles.row_pattern asks of them.
_NUMERIC_START = re.compile(('[01]\t(?:(?:%s)?\t){13}' % INT_PATTERN).encode())
UNREADABLE = (OSError, EOFError, zlib.error, tarfile.TarError)  # a truncated or corrupt input
_BLOCK = 1 << 23  # bytes read at a time
_TAB2COMMA = bytes.maketrans(b'\t', b',')
_LABELS = {b'0\t', b'1\t'}


class PrepareError(Exception):
    """Bad input or arguments; the message names the file (and line)."""


@contextmanager
def open_input(path):
    """Binary stream of the data: plain, .gz, or train.txt inside a .tar.gz."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise PrepareError('%s: is a directory, expected train.txt, train.txt.gz or dac.tar.gz' % path)
    if not os.path.isfile(path):
        raise PrepareError('%s: file not found' % path)
    if path.endswith(('.tar.gz', '.tgz', '.tar')):
        try:
            tar = tarfile.open(path, 'r|*')
            member = next((m for m in tar if m.isfile() and os.path.basename(m.name) == 'train.txt'), None)
        except UNREADABLE as err:
            raise PrepareError('%s: cannot be read as a tar archive (%s)' % (path, err)) from None
        with tar:
            if member is None:
                raise PrepareError('%s: no train.txt inside the archive' % path)
            f = tar.extractfile(member)
            try:
                yield f
            finally:
                f.close()
            return
    f = gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')
    try:
        yield f
    finally:
        f.close()


def _read(f, path):
    """The next block of the input; a truncated or corrupt one is a PrepareError naming it."""
    try:
        return f.read(_BLOCK)
    except UNREADABLE as err:
        raise PrepareError('%s: cannot be read (%s)' % (path, err)) from None


def _blocks(f, path):
    """Lists of complete lines (without newlines) read from a binary stream."""
    rest = b''
    while True:
        block = _read(f, path)
        if not block:
            break
        block = rest + block
        cut = block.rfind(b'\n')
        if cut < 0:
            rest = block
            continue
        rest = block[cut + 1:]
        yield block[:cut].split(b'\n')
    if rest:
        yield [rest]


def count_lines(path, max_rows=None):
    """Lines in the input (a last line without newline counts), up to max_rows."""
    n = 0
    last = b'\n'
    with open_input(path) as f:
        while True:
            block = _read(f, path)
            if not block:
                break
            n += block.count(b'\n')
            last = block[-1:]
            if max_rows is not None and n >= max_rows:
                return max_rows
    if last != b'\n':
        n += 1
    return n if max_rows is None else min(n, max_rows)


def _problem(line):
    """Why a line is not a Criteo row the models accept, or None."""
    if not line:
        return 'empty line'
    fields = line.count(b'\t') + 1
    if fields != FIELDS:
        return '%d fields, expected %d (tab-separated Kaggle train.txt)' % (fields, FIELDS)
    if line[:2] not in _LABELS:
        return 'label %r is not 0 or 1' % line.split(b'\t', 1)[0].decode('ascii', 'replace')
    if b',' in line:
        return 'a field contains a comma, which DeepRec CSV cannot hold'
    try:
        text = line.decode('utf-8')
    except UnicodeDecodeError as err:
        return 'not valid UTF-8 text (%s at byte %d)' % (err.reason, err.start + 1)
    return row_problem(text, SCHEMA, '\t')  # integers, NUL bytes


def _valid_text(block):
    """True when a block of lines is UTF-8 without NUL bytes."""
    if b'\x00' in block:
        return False
    if block.isascii():
        return True
    try:
        block.decode('utf-8')
    except UnicodeDecodeError:
        return False
    return True


def _convert(lines, out, bad_rows, path, first_line, skipped):
    """Write the valid lines as CSV; returns rows written.

    Fast path (C-level checks on the whole list) when every line is valid;
    otherwise line by line, to name the first bad line or skip bad ones.
    """
    if not lines:
        return 0
    joined = b'\n'.join(lines)
    if b'\r' in joined:  # CRLF line ends; a stray CR is dropped too, as the models' reader drops it
        lines = [line.replace(b'\r', b'') for line in lines]
        joined = b'\n'.join(lines)
    n = len(lines)
    if (list(map(bytes.count, lines, repeat(b'\t', n))).count(FIELDS - 1) == n
            and b',' not in joined and _valid_text(joined)
            and None not in map(_NUMERIC_START.match, lines)):
        out.write(joined.translate(_TAB2COMMA))
        out.write(b'\n')
        return n
    good = []
    for i, line in enumerate(lines):
        why = _problem(line)
        if why is None:
            good.append(line)
            continue
        where = '%s:%d' % (path, first_line + i)
        if first_line + i == 1 and line.startswith(b'label'):
            why += ' (a header row? train.txt has none)'
        if bad_rows != 'skip':
            raise PrepareError('%s: %s (use --bad_rows skip to skip such lines)' % (where, why))
        skipped.append((first_line + i, why))
    if good:
        out.write(b'\n'.join(good).translate(_TAB2COMMA))
        out.write(b'\n')
    return len(good)


def prepare_criteo(input_path, output_dir, eval_fraction=Fraction(1, 7), max_rows=None,
                   bad_rows='error', overwrite=False, progress_every=2_000_000, log=print):
    """Split input into output_dir/train.csv and eval.csv; return statistics.

    The split is by line number: the first lines - round(lines * eval_fraction)
    lines train, the rest evaluate (time order).  Skipped bad lines are
    counted on the side they fall.
    """
    input_path = os.fspath(input_path)
    eval_fraction = Fraction(eval_fraction).limit_denominator(10 ** 9)
    if not 0 <= eval_fraction < 1:
        raise PrepareError('--eval_fraction must be in [0, 1), got %s' % float(eval_fraction))
    if bad_rows not in ('error', 'skip'):
        raise PrepareError("--bad_rows must be 'error' or 'skip'")
    if max_rows is not None and max_rows <= 0:
        raise PrepareError('--max_rows must be positive')
    os.makedirs(output_dir, exist_ok=True)
    train_path = os.path.join(output_dir, 'train.csv')
    eval_path = os.path.join(output_dir, 'eval.csv')
    existing = [p for p in (train_path, eval_path) if os.path.exists(p)]
    if existing and not overwrite:
        raise PrepareError('%s already exist(s); pass --overwrite to replace'
                           % ' and '.join(existing))

    t0 = time.perf_counter()
    log('counting lines of %s%s ...' % (input_path, '' if max_rows is None
                                          else ' (up to %d)' % max_rows))
    total = count_lines(input_path, max_rows)
    if total == 0:
        raise PrepareError('%s: no lines' % input_path)
    n_eval = int(round(total * eval_fraction))
    n_train = total - n_eval
    log('%d lines (%.1f s): lines 1-%d -> train.csv, %d-%d -> eval.csv'
        % (total, time.perf_counter() - t0, n_train, n_train + 1, total))

    temps, outs, skipped = [], {}, []
    written = {'train': 0, 'eval': 0}
    try:
        for name, final in (('train', train_path), ('eval', eval_path)):
            fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(final),
                                       suffix='.tmp', dir=output_dir)
            temps.append(tmp)
            outs[name] = os.fdopen(fd, 'wb', buffering=1 << 20)
        done = 0
        next_report = progress_every
        t1 = time.perf_counter()
        with open_input(input_path) as f:
            for lines in _blocks(f, input_path):
                if done + len(lines) > total:
                    lines = lines[:total - done]
                if done < n_train:
                    k = min(len(lines), n_train - done)
                    written['train'] += _convert(lines[:k], outs['train'], bad_rows,
                                                 input_path, done + 1, skipped)
                    lines, first = lines[k:], done + k
                    done += k
                else:
                    first = done
                if lines:
                    written['eval'] += _convert(lines, outs['eval'], bad_rows,
                                                input_path, first + 1, skipped)
                    done += len(lines)
                if progress_every and done >= next_report:
                    rate = done / max(time.perf_counter() - t1, 1e-9)
                    log('  %d / %d lines (%.0f%%), %.0f lines/s'
                        % (done, total, 100.0 * done / total, rate))
                    next_report = (done // progress_every + 1) * progress_every
                if done >= total:
                    break
        if done < total:
            raise PrepareError('%s: only %d lines on the second pass, %d on the first '
                               '(did the file change?)' % (input_path, done, total))
        umask = os.umask(0)
        os.umask(umask)
        for name, tmp in zip(('train', 'eval'), temps):
            outs[name].flush()
            os.fsync(outs[name].fileno())
            outs[name].close()
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(temps[0], train_path)
        os.replace(temps[1], eval_path)
        temps = []
    finally:
        for out in outs.values():
            if not out.closed:
                out.close()
        for tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    seconds = time.perf_counter() - t0
    return {
        'input': input_path, 'lines': total, 'train_path': train_path, 'eval_path': eval_path,
        'train_rows': written['train'], 'eval_rows': written['eval'],
        'skipped': len(skipped), 'skipped_lines': skipped[:20], 'seconds': seconds,
    }


def _fraction(text):
    try:
        return Fraction(text)  # accepts 1/7 as well as 0.142857
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError('not a fraction: %r' % text) from None


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # so temporary files are removed


def main(argv=None):
    p = argparse.ArgumentParser(
        description='Convert the Criteo Kaggle train.txt (tab-separated, optionally .gz or the '
                    'dac.tar.gz archive) to DeepRec CSV train.csv + eval.csv, time-ordered: the '
                    'last --eval_fraction of the lines is the eval set.')
    p.add_argument('--input', required=True, help='train.txt, train.txt.gz or dac.tar.gz')
    p.add_argument('--output_dir', default='./data/criteo',
                   help='where train.csv and eval.csv go (the models\' --data_location default)')
    p.add_argument('--eval_fraction', type=_fraction, default=Fraction(1, 7),
                   help='last fraction of lines held out for eval, e.g. 1/7 (the last day) or 0.1')
    p.add_argument('--max_rows', type=int, default=None,
                   help='use only the first N lines (a quick subset; split the same way)')
    p.add_argument('--bad_rows', choices=('error', 'skip'), default='error',
                   help='error: a malformed line stops with file and line number; '
                        'skip: skip such lines and report how many')
    p.add_argument('--overwrite', action='store_true', help='replace existing train.csv/eval.csv')
    p.add_argument('--progress_every', type=int, default=2_000_000,
                   help='print progress every N lines (0: never)')
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        st = prepare_criteo(args.input, args.output_dir, args.eval_fraction, args.max_rows,
                            args.bad_rows, args.overwrite, args.progress_every,
                            log=lambda m: print(m, flush=True))
    except PrepareError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    print('wrote %s (%d rows) and %s (%d rows) from %d lines in %.1f s'
          % (st['train_path'], st['train_rows'], st['eval_path'], st['eval_rows'],
             st['lines'], st['seconds']))
    if st['skipped']:
        print('skipped %d bad line(s); first: %s' % (
            st['skipped'], '; '.join('line %d: %s' % x for x in st['skipped_lines'][:5])))
    return 0


if __name__ == '__main__':
    sys.exit(main())
