"""Tests of data/prepare_criteo.py on generated data (and on the real sample when present).

Why: preparing the full data takes minutes and users run it once on 11 GB, so the split must
be right the first time (time order, last fraction = eval), bad lines must be named by file
and line, and an interrupted or failed run must not leave a half-written train.csv behind.
"""
import gzip
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
from fractions import Fraction
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
CRITEO_SAMPLE = SHARED_DATA / 'criteo-kaggle-head10k' / 'train.txt'
SCRIPT = REPO / 'data' / 'prepare_criteo.py'
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelzoo.synthetic import generate_criteo  # noqa: E402

_spec = importlib.util.spec_from_file_location('prepare_criteo', SCRIPT)
prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prep)

ROWS = 7_000


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
    """7,000 generated rows in Kaggle format, and their lines."""
    path = tmp_path_factory.mktemp('raw') / 'train.txt'
    generate_criteo(path, ROWS, seed=4)
    return path, path.read_bytes().split(b'\n')[:-1]


def as_csv(lines):
    return b''.join(line.replace(b'\t', b',') + b'\n' for line in lines)


def run_cli(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_split_is_time_ordered_last_seventh_is_eval(raw, tmp_path):
    path, lines = raw
    st = prep.prepare_criteo(path, tmp_path, log=lambda m: None)
    assert (st['lines'], st['train_rows'], st['eval_rows'], st['skipped']) == (7000, 6000, 1000, 0)
    assert (tmp_path / 'train.csv').read_bytes() == as_csv(lines[:6000])
    assert (tmp_path / 'eval.csv').read_bytes() == as_csv(lines[6000:])
    # no temporary files; each output's line index (modelzoo/line_index.py), written as it was
    assert sorted(os.listdir(tmp_path)) == ['.eval.csv.index.json', '.train.csv.index.json', 'eval.csv', 'train.csv']


def test_cli_max_rows_fraction_and_progress(raw, tmp_path):
    path, lines = raw
    proc = run_cli('--input', path, '--output_dir', tmp_path, '--max_rows', 3500,
                   '--eval_fraction', '0.2', '--progress_every', 1000)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'train.csv').read_bytes() == as_csv(lines[:2800])
    assert (tmp_path / 'eval.csv').read_bytes() == as_csv(lines[2800:3500])
    assert '3500 lines' in proc.stdout and '(2800 rows)' in proc.stdout
    assert '(700 rows)' in proc.stdout and '/ 3500 lines' in proc.stdout  # progress lines
    # existing outputs are not replaced silently
    proc = run_cli('--input', path, '--output_dir', tmp_path)
    assert proc.returncode != 0 and '--overwrite' in proc.stderr
    proc = run_cli('--input', path, '--output_dir', tmp_path, '--eval_fraction', '1/7',
                   '--overwrite')
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'eval.csv').read_bytes() == as_csv(lines[6000:])


def test_gzip_and_archive_inputs(raw, tmp_path):
    path, lines = raw
    gz = tmp_path / 'train.txt.gz'
    gz.write_bytes(gzip.compress(path.read_bytes()))
    tgz = tmp_path / 'dac.tar.gz'
    with tarfile.open(tgz, 'w:gz') as tar:
        info = tarfile.TarInfo('readme.txt')
        info.size = 5
        tar.addfile(info, io.BytesIO(b'hello'))
        tar.add(path, arcname='train.txt')
    for src in (gz, tgz):
        out = tmp_path / ('out_' + src.name.split('.')[0])
        st = prep.prepare_criteo(src, out, eval_fraction=Fraction(1, 7), log=lambda m: None)
        assert (st['train_rows'], st['eval_rows']) == (6000, 1000)
        assert (out / 'train.csv').read_bytes() == as_csv(lines[:6000])
        assert (out / 'eval.csv').read_bytes() == as_csv(lines[6000:])


def _with_bad_lines(lines, bad, tmp_path, name='bad.txt'):
    """Copy of the lines with bad[i] replacing line number i (1-based)."""
    out = list(lines)
    for number, text in bad.items():
        out[number - 1] = text
    path = tmp_path / name
    path.write_bytes(b'\n'.join(out) + b'\n')
    return path


def test_bad_line_stops_with_file_and_line(raw, tmp_path):
    _, lines = raw
    short = lines[1233].rsplit(b'\t', 1)[0]  # 39 fields
    bad = _with_bad_lines(lines, {1234: short}, tmp_path)
    out = tmp_path / 'out'
    proc = run_cli('--input', bad, '--output_dir', out)
    assert proc.returncode != 0
    assert '%s:1234' % bad in proc.stderr and '39 fields, expected 40' in proc.stderr
    assert '--bad_rows skip' in proc.stderr
    assert os.listdir(out) == []  # no train.csv, no eval.csv, no temporary files
    # other kinds of bad lines are named too
    for text, why in ((b'', 'empty line'), (b'x' + lines[9][1:], 'label'),
                      (lines[9].replace(b'\t', b'\t,', 1), 'comma')):
        bad = _with_bad_lines(lines, {10: text}, tmp_path, 'bad2.txt')
        with pytest.raises(prep.PrepareError, match=r'bad2.txt:10: .*%s' % why):
            prep.prepare_criteo(bad, tmp_path / 'out2', log=lambda m: None)
        assert os.listdir(tmp_path / 'out2') == []


def test_bad_lines_skipped_and_counted(raw, tmp_path):
    _, lines = raw
    bad = _with_bad_lines(lines, {100: b'garbage', 6500: lines[6499] + b'\textra'}, tmp_path)
    out = tmp_path / 'out'
    proc = run_cli('--input', bad, '--output_dir', out, '--bad_rows', 'skip')
    assert proc.returncode == 0, proc.stderr
    assert 'skipped 2 bad line(s)' in proc.stdout
    assert 'line 100:' in proc.stdout and 'line 6500: 41 fields' in proc.stdout
    # the split stays at line 6000: one skipped line on each side
    assert (out / 'train.csv').read_bytes() == as_csv(lines[:99] + lines[100:6000])
    assert (out / 'eval.csv').read_bytes() == as_csv(lines[6000:6499] + lines[6500:])


def test_crlf_and_missing_final_newline(raw, tmp_path):
    _, lines = raw
    crlf = tmp_path / 'crlf.txt'
    crlf.write_bytes(b'\r\n'.join(lines[:700]))  # no newline after the last line
    st = prep.prepare_criteo(crlf, tmp_path / 'out', log=lambda m: None)
    assert (st['train_rows'], st['eval_rows']) == (600, 100)
    out = tmp_path / 'out'
    got = (out / 'train.csv').read_bytes() + (out / 'eval.csv').read_bytes()
    assert got == as_csv(lines[:700])


def test_argument_errors(raw, tmp_path):
    path, _ = raw
    proc = run_cli('--input', tmp_path / 'missing.txt', '--output_dir', tmp_path / 'o')
    assert proc.returncode != 0 and 'missing.txt: file not found' in proc.stderr
    with pytest.raises(prep.PrepareError, match='eval_fraction'):
        prep.prepare_criteo(path, tmp_path / 'o', eval_fraction=1, log=lambda m: None)
    empty = tmp_path / 'empty.txt'
    empty.write_bytes(b'')
    with pytest.raises(prep.PrepareError, match='no lines'):
        prep.prepare_criteo(empty, tmp_path / 'o', log=lambda m: None)


def test_real_sample(tmp_path):
    if not CRITEO_SAMPLE.is_file():
        pytest.skip('real Criteo sample not found at %s (../shared/data beside the checkout)'
                    % CRITEO_SAMPLE)
    st = prep.prepare_criteo(CRITEO_SAMPLE, tmp_path, log=lambda m: None)
    assert (st['lines'], st['train_rows'], st['eval_rows']) == (9999, 8571, 1428)
    lines = CRITEO_SAMPLE.read_bytes().split(b'\n')[:-1]
    assert (tmp_path / 'train.csv').read_bytes() == as_csv(lines[:8571])
    assert (tmp_path / 'eval.csv').read_bytes() == as_csv(lines[8571:])


@pytest.fixture()
def days(raw, tmp_path):
    """Criteo 1TB-shaped day files: day_0, day_2 and day_10 (gzip), 1,000 generated lines each, and their
    lines by day number."""
    _, lines = raw
    folder = tmp_path / 'days'
    folder.mkdir()
    by_day = {0: lines[:1000], 2: lines[1000:2000], 10: lines[2000:3000]}
    for day, rows in by_day.items():
        text = b''.join(line + b'\n' for line in rows)
        if day == 10:
            (folder / 'day_10.gz').write_bytes(gzip.compress(text))
        else:
            (folder / f'day_{day}').write_bytes(text)
    return folder, by_day


def test_day_files_convert_one_csv_a_day_in_day_order_the_last_day_held_out(days, tmp_path):
    folder, by_day = days
    out = tmp_path / 'out'
    proc = run_cli('--input', folder, '--output_dir', out)
    assert proc.returncode == 0, proc.stderr
    # day 10 is the last in time (text order would put it before day 2) and is held out
    assert sorted(os.listdir(out / 'train')) == ['.day_0.csv.index.json', '.day_2.csv.index.json', 'day_0.csv',
                                                 'day_2.csv']
    assert sorted(os.listdir(out / 'eval')) == ['.day_10.csv.index.json', 'day_10.csv']
    for day, side in ((0, 'train'), (2, 'train'), (10, 'eval')):
        assert (out / side / f'day_{day}.csv').read_bytes() == as_csv(by_day[day])
    assert "--train_files '%s/train/*.csv' --eval_files '%s/eval/*.csv'" % (out, out) in proc.stdout
    assert 'counting' not in proc.stdout  # one pass a day: no line count


def test_day_files_eval_day_max_rows_and_gzip_output(days, tmp_path):
    folder, by_day = days
    st = prep.prepare_days([folder / 'day_10.gz', folder / 'day_0', folder / 'day_2'], tmp_path, eval_day=2,
                           max_rows=300, gzip_output=True, log=lambda m: None)
    assert (st['train_rows'], st['eval_rows'], st['eval_day']) == (600, 300, 2)
    assert gzip.decompress((tmp_path / 'eval' / 'day_2.csv.gz').read_bytes()) == as_csv(by_day[2][:300])
    assert gzip.decompress((tmp_path / 'train' / 'day_10.csv.gz').read_bytes()) == as_csv(by_day[10][:300])


def test_a_stopped_day_run_resumes_at_the_first_day_not_written(days, tmp_path):
    """A bad line in day 2 stops the run after day 0 is written; once day 2 is fixed, the next run keeps
    day 0 (recorded in prepared.json with its input's identity) and converts the rest."""
    folder, by_day = days
    good = (folder / 'day_2').read_bytes()
    (folder / 'day_2').write_bytes(good.replace(b'\n', b'\nnot a row\n', 1))
    with pytest.raises(prep.PrepareError, match=r'day_2:2: '):
        prep.prepare_days([folder], tmp_path, log=lambda m: None)
    assert sorted(os.listdir(tmp_path / 'train')) == ['.day_0.csv.index.json', 'day_0.csv']  # nothing of day 2
    (folder / 'day_2').write_bytes(good)
    st = prep.prepare_days([folder], tmp_path, log=lambda m: None)
    assert (st['kept'], st['converted']) == ([0], [2, 10])
    assert (tmp_path / 'train' / 'day_2.csv').read_bytes() == as_csv(by_day[2])
    # an output whose input changed since is not kept silently
    (folder / 'day_0').write_bytes(as_csv(by_day[0][:10]).replace(b',', b'\t'))
    with pytest.raises(prep.PrepareError, match='does not say it was made from'):
        prep.prepare_days([folder], tmp_path, log=lambda m: None)
    # another held-out day moves day 10 to train and removes its eval copy
    st = prep.prepare_days([folder], tmp_path, eval_day=2, overwrite=True, log=lambda m: None)
    assert sorted(os.listdir(tmp_path / 'eval')) == ['.day_2.csv.index.json', 'day_2.csv']  # (day 10's index gone)
    assert 'day_10.csv' in os.listdir(tmp_path / 'train')


@pytest.mark.parametrize('args,words', [
    (['--eval_fraction', '0.1'], '--eval_fraction applies to one input file only'),
    (['--eval_day', '7'], r'--eval_day 7: no such day among the inputs \(days 0, 2, 10\)'),
])
def test_day_file_refusals_name_the_flag(days, tmp_path, args, words):
    folder, _ = days
    proc = run_cli('--input', folder, '--output_dir', tmp_path / 'out', *args)
    assert proc.returncode == 2 and re.search(words, proc.stderr), proc.stderr
    proc = run_cli('--input', folder / 'day_0', tmp_path / 'x.txt', '--output_dir', tmp_path / 'out')
    assert proc.returncode == 2 and 'file not found' in proc.stderr
    (tmp_path / 'train.txt').write_bytes(b'')
    proc = run_cli('--input', folder / 'day_0', tmp_path / 'train.txt', '--output_dir', tmp_path / 'out')
    assert proc.returncode == 2 and 'must be a Criteo 1TB day file named day_N' in proc.stderr
