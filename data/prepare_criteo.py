#!/usr/bin/env python
"""Prepare the Criteo Kaggle train.txt as DeepRec-format train.csv and eval.csv, or Criteo 1TB's
day files (day_0 .. day_23) as one CSV a day, the last (or a chosen) day held out.

Why: the full data set (45,840,617 rows, ~11 GB, 7 days in time order) is too
big to load, and a random split would leak the future into training.  This
script streams it (constant memory), keeps time order, and holds out the
last --eval_fraction of the rows (default 1/7: the last day) for evaluation.

    python data/prepare_criteo.py --input ~/criteo/train.txt            # -> data/criteo/
    python data/prepare_criteo.py --input ~/criteo/dac.tar.gz --max_rows 1000000

Criteo 1TB (24 day files of the same 40 columns, 4.4 billion rows): give the files or their folder;
each day is checked and converted in one pass (no line count: the split is by day), in the order of
the day numbers (day_2 before day_10), to OUTPUT/train/day_N.csv, and the held-out day (--eval_day,
default the last) to OUTPUT/eval/; a killed run resumes at the first day not yet written:

    python data/prepare_criteo.py --input ~/criteo1tb/ --output_dir data/criteo1tb   # day_0.gz .. day_23.gz

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
import json
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

from modelzoo.datafiles import INT_PATTERN, file_identity, natural_key, row_problem  # noqa: E402
from modelzoo.io_utils import atomic_write_json, atomic_writer  # noqa: E402
from modelzoo.line_index import IndexingWriter, sidecar  # noqa: E402
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
        # each output's line index, counted as it is written (read by the models instead of a count)
        indexed = {name: IndexingWriter(out) for name, out in outs.items()}
        done = 0
        next_report = progress_every
        t1 = time.perf_counter()
        with open_input(input_path) as f:
            for lines in _blocks(f, input_path):
                if done + len(lines) > total:
                    lines = lines[:total - done]
                if done < n_train:
                    k = min(len(lines), n_train - done)
                    written['train'] += _convert(lines[:k], indexed['train'], bad_rows,
                                                 input_path, done + 1, skipped)
                    lines, first = lines[k:], done + k
                    done += k
                else:
                    first = done
                if lines:
                    written['eval'] += _convert(lines, indexed['eval'], bad_rows,
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
        indexed['train'].save(train_path)
        indexed['eval'].save(eval_path)
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


DAY_NAME = re.compile(r'day_(\d+)(?:\.gz)?$')  # Criteo 1TB's day files: day_0 .. day_23, plain or gzip
DAYS_MANIFEST = 'prepared.json'  # what each day's output was made from, for a resumed run


def day_files(inputs):
    """The day files among `inputs` (files, or folders whose day_N files are taken), in day order, as
    [(day number, path)]; a file not named day_N is refused, as is a day given twice."""
    found = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            names = [n for n in os.listdir(item) if DAY_NAME.fullmatch(n)]
            if not names:
                raise PrepareError('%s: no day_N or day_N.gz file in the folder (Criteo 1TB day files)' % item)
            found.extend(os.path.join(item, n) for n in names)
        elif not os.path.isfile(item):
            raise PrepareError('%s: file not found' % item)
        elif not DAY_NAME.fullmatch(os.path.basename(item)):
            raise PrepareError('%s: with several inputs each must be a Criteo 1TB day file named day_N or '
                               'day_N.gz (its number gives the time order)' % item)
        else:
            found.append(item)
    days = sorted(((int(DAY_NAME.fullmatch(os.path.basename(p)).group(1)), p) for p in found),
                  key=lambda dp: (dp[0], natural_key(dp[1])))
    numbers = [d for d, _ in days]
    repeated = sorted({d for d in numbers if numbers.count(d) > 1})
    if repeated:
        raise PrepareError('day %s given more than once: %s' % (repeated[0], [p for d, p in days if d == repeated[0]]))
    return days


def _convert_stream(input_path, out, bad_rows, skipped, max_rows=None, progress_every=0, log=print):
    """Check and convert one input into `out` in a single pass (up to max_rows lines); returns
    (lines read, rows written)."""
    done = written = 0
    next_report = progress_every
    t0 = time.perf_counter()
    with open_input(input_path) as f:
        for lines in _blocks(f, input_path):
            if max_rows is not None and done + len(lines) > max_rows:
                lines = lines[:max_rows - done]
            written += _convert(lines, out, bad_rows, input_path, done + 1, skipped)
            done += len(lines)
            if progress_every and done >= next_report:
                log('  %s: %d lines, %.0f lines/s' % (os.path.basename(input_path), done,
                                                      done / max(time.perf_counter() - t0, 1e-9)))
                next_report = (done // progress_every + 1) * progress_every
            if max_rows is not None and done >= max_rows:
                break
    return done, written


def prepare_days(inputs, output_dir, eval_day=None, max_rows=None, bad_rows='error', overwrite=False,
                 gzip_output=False, progress_every=2_000_000, log=print):
    """Criteo 1TB's day files, each to its own CSV: OUTPUT/train/day_N.csv for every day but the held-out
    one (--eval_day, default the last), OUTPUT/eval/day_N.csv for it; returns statistics.

    One pass a day and no line count, so the cost is that of reading the data once. Each output is
    written atomically and recorded in OUTPUT/prepared.json with the identity of its input (name, size,
    first line), so a run stopped at any point and started again keeps the days already written and
    converts the rest; an output made from another input or with other options is refused unless
    --overwrite.
    """
    if bad_rows not in ('error', 'skip'):
        raise PrepareError("--bad_rows must be 'error' or 'skip'")
    if max_rows is not None and max_rows <= 0:
        raise PrepareError('--max_rows must be positive')
    days = day_files(inputs)
    if len(days) < 2:
        raise PrepareError('day files: expected at least 2 (one to train on, one held out), got %d' % len(days))
    numbers = [d for d, _ in days]
    held = numbers[-1] if eval_day is None else eval_day
    if held not in numbers:
        raise PrepareError('--eval_day %d: no such day among the inputs (days %s)' % (held, _ranges(numbers)))
    options = {'max_rows': max_rows, 'bad_rows': bad_rows, 'gzip': gzip_output}
    manifest_path = os.path.join(output_dir, DAYS_MANIFEST)
    manifest = {'options': options, 'days': {}}
    if os.path.exists(manifest_path) and not overwrite:
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get('options') != options:
            raise PrepareError('%s: made with %s, asked %s; pass --overwrite to prepare again'
                               % (manifest_path, manifest.get('options'), options))
    manifest['eval_day'] = held
    log('%d day files (days %s): day %d held out -> %s/eval/, the rest -> %s/train/'
        % (len(days), _ranges(numbers), held, output_dir, output_dir))
    t0 = time.perf_counter()
    stats = {'train_rows': 0, 'eval_rows': 0, 'lines': 0, 'kept': [], 'converted': [], 'skipped': 0,
             'skipped_lines': []}
    suffix = '.csv.gz' if gzip_output else '.csv'
    for day, path in days:
        side = 'eval' if day == held else 'train'
        out_path = os.path.join(output_dir, side, 'day_%d%s' % (day, suffix))
        ident = file_identity(path)
        entry = manifest['days'].get(str(day))
        others = [os.path.join(output_dir, other, 'day_%d%s' % (day, suffix)) for other in ('train', 'eval')]
        stale = [o for o in others if os.path.exists(o) and o != out_path]
        if os.path.exists(out_path) and not overwrite:
            if not entry or entry.get('input') != ident or entry.get('output') != out_path:
                raise PrepareError('%s already exists and %s does not say it was made from %s; pass --overwrite '
                                   'to replace it' % (out_path, manifest_path, path))
            log('  day %d: %s kept (%d rows, written by an earlier run)' % (day, out_path, entry['rows']))
            stats['kept'].append(day)
        else:
            skipped = []
            t1 = time.perf_counter()
            writer = atomic_writer(out_path, 'wb')
            with writer as raw_out:
                out = gzip.GzipFile(fileobj=raw_out, mode='wb', compresslevel=1, mtime=0) if gzip_output else raw_out
                indexed = IndexingWriter(out)  # its line index (the row count, for a .gz), counted as it is written
                try:
                    lines, rows = _convert_stream(path, indexed, bad_rows, skipped, max_rows, progress_every, log)
                finally:
                    if gzip_output:
                        out.close()
            indexed.save(out_path)
            entry = {'input': ident, 'output': out_path, 'lines': lines, 'rows': rows, 'skipped': len(skipped),
                     'skipped_lines': skipped[:20]}
            manifest['days'][str(day)] = entry
            atomic_write_json(manifest_path, manifest)
            log('  day %d: %s, %d rows in %.1f s' % (day, out_path, rows, time.perf_counter() - t1))
            stats['converted'].append(day)
        for old in stale:  # the day moved sides (another --eval_day): its old output is not data any more
            os.unlink(old)
            if os.path.exists(sidecar(old)):
                os.unlink(sidecar(old))
        stats['%s_rows' % side] += entry['rows']
        stats['lines'] += entry['lines']
        stats['skipped'] += entry['skipped']
        stats['skipped_lines'] += [(day, line, why) for line, why in entry['skipped_lines']][:20]
    stats.update(seconds=time.perf_counter() - t0, eval_day=held, output_dir=output_dir,
                 train_glob=os.path.join(output_dir, 'train', '*' + suffix),
                 eval_glob=os.path.join(output_dir, 'eval', '*' + suffix))
    return stats


def _ranges(numbers):
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(start) if start == n else '%d-%d' % (start, n))
            start = None
    return ', '.join(out)


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
    p.add_argument('--input', required=True, nargs='+',
                   help='train.txt, train.txt.gz or dac.tar.gz; or Criteo 1TB day files (day_0[.gz] .. '
                        'day_23[.gz]) or their folder, each day to its own CSV')
    p.add_argument('--output_dir', default='./data/criteo',
                   help='where train.csv and eval.csv go (the models\' --data_location default)')
    p.add_argument('--eval_fraction', type=_fraction, default=None,
                   help='last fraction of lines held out for eval, e.g. 1/7 (the last day; the default) or 0.1 '
                        '(one file only: day files are held out by day)')
    p.add_argument('--eval_day', type=int, default=None,
                   help='day files: the day held out for eval (default: the last, day 23 of Criteo 1TB)')
    p.add_argument('--gzip', action='store_true', help='day files: write day_N.csv.gz (gzip level 1)')
    p.add_argument('--max_rows', type=int, default=None,
                   help='use only the first N lines (a quick subset; split the same way); with day files, the '
                        'first N of each day')
    p.add_argument('--bad_rows', choices=('error', 'skip'), default='error',
                   help='error: a malformed line stops with file and line number; '
                        'skip: skip such lines and report how many')
    p.add_argument('--overwrite', action='store_true', help='replace existing train.csv/eval.csv')
    p.add_argument('--progress_every', type=int, default=2_000_000,
                   help='print progress every N lines (0: never)')
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    days = len(args.input) > 1 or os.path.isdir(args.input[0])
    wrong = [flag for flag, given in (('--eval_fraction', args.eval_fraction is not None and days),
                                      ('--eval_day', args.eval_day is not None and not days),
                                      ('--gzip', args.gzip and not days)) if given]
    if wrong:
        print('error: %s applies to %s only' % (wrong[0], 'one input file' if days else 'day files'),
              file=sys.stderr)
        return 2
    log = lambda m: print(m, flush=True)  # noqa: E731
    try:
        if days:
            st = prepare_days(args.input, args.output_dir, args.eval_day, args.max_rows, args.bad_rows,
                              args.overwrite, args.gzip, args.progress_every, log)
        else:
            st = prepare_criteo(args.input[0], args.output_dir, args.eval_fraction or Fraction(1, 7),
                                args.max_rows, args.bad_rows, args.overwrite, args.progress_every, log)
    except PrepareError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    if days:
        print('wrote %d train rows to %s and %d eval rows (day %d) to %s in %.1f s (%d days converted, %d kept)'
              % (st['train_rows'], st['train_glob'], st['eval_rows'], st['eval_day'], st['eval_glob'],
                 st['seconds'], len(st['converted']), len(st['kept'])))
        print("train with: --train_files '%s' --eval_files '%s'" % (st['train_glob'], st['eval_glob']))
        if st['skipped']:
            print('skipped %d bad line(s); first: %s' % (
                st['skipped'], '; '.join('day %d line %d: %s' % x for x in st['skipped_lines'][:5])))
        return 0
    print('wrote %s (%d rows) and %s (%d rows) from %d lines in %.1f s'
          % (st['train_path'], st['train_rows'], st['eval_path'], st['eval_rows'],
             st['lines'], st['seconds']))
    if st['skipped']:
        print('skipped %d bad line(s); first: %s' % (
            st['skipped'], '; '.join('line %d: %s' % x for x in st['skipped_lines'][:5])))
    return 0


if __name__ == '__main__':
    sys.exit(main())
