"""Tests of the synthetic Criteo generator (modelzoo/synthetic.py, data/generate_criteo.py).

Why: models, tests and benchmarks train on this data when the real data is absent, so its
format must be exactly the Kaggle/DeepRec one, its statistics close to the real ones, its
labels learnable, its output reproducible, and its writes atomic.
"""
import gzip
import hashlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
CRITEO_SAMPLE = SHARED_DATA / 'criteo-kaggle-head10k' / 'train.txt'
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelzoo import synthetic  # noqa: E402
from modelzoo.synthetic import (  # noqa: E402
    CAT_COLUMNS, CAT_MISSING_RATES, CRITEO_KAGGLE_CARDINALITIES, INT_COLUMNS,
    INT_MISSING_RATES, column_ids, describe_criteo_file, generate_criteo, iter_chunks)

HEX8 = re.compile(r'[0-9a-f]{8}')
ROWS = 30_000
# Columns whose most frequent id is well ahead of the second one (in the real sample too).
CLEAR_TOP_ID = ('C1', 'C2', 'C3', 'C5', 'C6', 'C8', 'C9', 'C10', 'C17', 'C19', 'C22', 'C23',
                'C25')


def read_rows(path, sep='\t'):
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'rt') as f:
        return [line.rstrip('\n').split(sep) for line in f]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
    """30,000 generated rows (seed 0), written once and parsed."""
    path = tmp_path_factory.mktemp('synthetic') / 'train.txt'
    stats = generate_criteo(path, ROWS, seed=0)
    return path, stats, read_rows(path)


def test_fields_and_formats(sample):
    path, stats, rows = sample
    assert stats['rows'] == len(rows) == ROWS
    assert stats['fmt'] == 'kaggle'
    assert Path(path).read_bytes().endswith(b'\n')
    for r in rows:
        assert len(r) == 40
        assert r[0] in ('0', '1')
        for v in r[1:14]:
            assert v == '' or str(int(v)) == v  # canonical integers
        for v in r[14:]:
            assert v == '' or HEX8.fullmatch(v)
    assert stats['positives'] == sum(r[0] == '1' for r in rows)


def test_csv_and_gzip_hold_the_same_rows(sample, tmp_path):
    _, _, rows = sample
    csv = tmp_path / 'train.csv'
    assert generate_criteo(csv, 5_000, seed=0)['fmt'] == 'csv'
    assert read_rows(csv, ',') == rows[:5_000]
    gz = tmp_path / 'train.csv.gz'
    assert generate_criteo(gz, 5_000, seed=0)['fmt'] == 'csv'
    assert gzip.decompress(gz.read_bytes()) == csv.read_bytes()
    txt_gz = tmp_path / 'train.txt.gz'
    generate_criteo(txt_gz, 5_000, seed=0)
    assert read_rows(txt_gz) == rows[:5_000]
    # gzip output is byte-for-byte reproducible too (no time or name in the header)
    again = tmp_path / 'again.txt.gz'
    generate_criteo(again, 5_000, seed=0, fmt='kaggle')
    assert again.read_bytes() == txt_gz.read_bytes()
    forced = tmp_path / 'forced.txt'
    assert generate_criteo(forced, 10, seed=0, fmt='csv')['fmt'] == 'csv'
    assert len(read_rows(forced, ',')[0]) == 40
    with pytest.raises(ValueError):
        generate_criteo(tmp_path / 'x.txt', 10, fmt='parquet')


def test_missing_rates_match_targets(sample):
    _, _, rows = sample
    n = len(rows)
    cols = INT_COLUMNS + CAT_COLUMNS
    targets = {**INT_MISSING_RATES, **CAT_MISSING_RATES}
    for j, c in enumerate(cols, start=1):
        rate = sum(r[j] == '' for r in rows) / n
        tol = 4 * math.sqrt(targets[c] * (1 - targets[c]) / n) + 0.002
        assert abs(rate - targets[c]) <= tol, (c, rate, targets[c])
    # the README's integer targets
    readme = dict(zip(INT_COLUMNS, [.448, .000, .204, .198, .049, .251, .049, .001, .049,
                                    .448, .049, .773, .198]))
    assert INT_MISSING_RATES == readme
    # columns missing together in the real data are missing together here
    for a, b in (('I1', 'I10'), ('I4', 'I13'), ('C3', 'C24'), ('C19', 'C26')):
        ia, ib = cols.index(a) + 1, cols.index(b) + 1
        assert all((r[ia] == '') == (r[ib] == '') for r in rows)


def test_ctr_near_25_percent(sample):
    _, stats, _ = sample
    assert 0.22 <= stats['ctr'] <= 0.28
    assert 0.70 <= stats['hidden_auc'] <= 0.85


def test_integers_are_heavy_tailed(sample):
    _, _, rows = sample
    col = {c: np.array([int(r[j]) for r in rows if r[j] != ''])
           for j, c in enumerate(INT_COLUMNS, start=1)}
    assert col['I5'].max() > 200_000 and np.median(col['I5']) < 10_000  # long right tail
    assert 0.05 < np.mean(col['I2'] < 0) < 0.15  # I2 is -1 for ~10% of rows, as in the data
    assert col['I2'].min() >= -3
    assert 0.4 < np.mean(col['I1'] == 0) < 0.55
    for c, v in col.items():
        assert v.max() < 2 ** 31, c


def test_ids_are_skewed_and_within_cardinality(sample):
    _, _, rows = sample
    for k, c in enumerate(CAT_COLUMNS, start=14):
        values = [r[k] for r in rows if r[k] != '']
        ids, counts = np.unique(values, return_counts=True)
        assert len(ids) <= CRITEO_KAGGLE_CARDINALITIES[c]
        if c in CLEAR_TOP_ID:  # the most frequent id is the column's rank-0 id
            assert ids[np.argmax(counts)] == '%08x' % column_ids(c, [0])[0], c
    c1 = [r[14] for r in rows]
    assert 0.45 < c1.count('%08x' % column_ids('C1', [0])[0]) / len(rows) < 0.55
    c3 = [r[16] for r in rows if r[16]]
    _, counts = np.unique(c3, return_counts=True)
    assert len(counts) > 10_000  # long tail: many rare ids ...
    assert counts.max() > 1_000  # ... and a few very frequent ones


def test_id_hash_is_a_bijection_per_column():
    for c in CAT_COLUMNS:
        k = min(CRITEO_KAGGLE_CARDINALITIES[c], 1_000_000)
        ids = column_ids(c, np.arange(k))
        assert len(np.unique(ids)) == k, c
    ranks = np.concatenate([chunk['cat_ranks'] for chunk in iter_chunks(20_000, seed=3)])
    card = np.array([CRITEO_KAGGLE_CARDINALITIES[c] for c in CAT_COLUMNS])
    assert (ranks >= 0).all() and (ranks < card).all()


def test_deterministic(tmp_path):
    a, b, c = tmp_path / 'a.txt', tmp_path / 'b.txt', tmp_path / 'c.txt'
    generate_criteo(a, 10_000, seed=7)
    generate_criteo(b, 10_000, seed=7, chunk_rows=1_234, workers=1)  # chunking does not matter
    generate_criteo(c, 10_000, seed=8)
    assert sha256(a) == sha256(b)
    assert sha256(a) != sha256(c)
    short = tmp_path / 'short.txt'
    generate_criteo(short, 3_000, seed=7)
    assert a.read_bytes().startswith(short.read_bytes())  # a shorter file is a prefix
    with pytest.raises(ValueError):
        generate_criteo(tmp_path / 'neg.txt', 10, seed=-1)


def test_ids_recur_across_seeds(tmp_path):
    one, two = tmp_path / 'one.txt', tmp_path / 'two.txt'
    generate_criteo(one, 10_000, seed=1)
    generate_criteo(two, 10_000, seed=2)
    r1, r2 = read_rows(one), read_rows(two)
    for k, c in enumerate(CAT_COLUMNS, start=14):
        v1 = {r[k] for r in r1 if r[k]}
        v2 = {r[k] for r in r2 if r[k]}
        rows_seen = sum(1 for r in r2 if r[k] in v1) / sum(1 for r in r2 if r[k])
        # most rows of one file use ids that also occur in the other (same vocabulary)
        assert rows_seen > 0.35, (c, rows_seen)
        if CRITEO_KAGGLE_CARDINALITIES[c] <= 1000:
            assert len(v1 & v2) >= 0.5 * min(len(v1), len(v2)), c


def _hashed_features(rows):
    """Criteo-style hashed one-hot features: C=id, I=floor(log(x)^2)."""
    from sklearn.feature_extraction import FeatureHasher

    def bucket(v):
        if v == '':
            return 'na'
        x = int(v)
        return str(int(math.log(x) ** 2)) if x > 2 else v

    tokens = [['I%d=%s' % (j, bucket(r[j])) for j in range(1, 14)]
              + ['C%d=%s' % (k - 13, r[k]) for k in range(14, 40)] for r in rows]
    hasher = FeatureHasher(n_features=1 << 20, input_type='string', alternate_sign=False)
    X = hasher.transform(tokens)
    return X, np.array([int(r[0]) for r in rows])


def test_labels_are_learnable(tmp_path):
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    train, held_out = tmp_path / 'train.txt', tmp_path / 'eval.txt'
    generate_criteo(train, 50_000, seed=11)
    generate_criteo(held_out, 15_000, seed=12)
    Xtr, ytr = _hashed_features(read_rows(train))
    Xte, yte = _hashed_features(read_rows(held_out))
    model = SGDClassifier(loss='log_loss', alpha=1e-4, max_iter=10, tol=None, random_state=0)
    model.fit(Xtr, ytr)
    auc = roc_auc_score(yte, model.decision_function(Xte))
    assert auc > 0.65, auc
    # the hidden model itself: the ceiling, and what generate_criteo reports
    hidden = np.concatenate([c['prob'] for c in iter_chunks(15_000, seed=12)])
    hidden_auc = roc_auc_score(yte, hidden)
    assert auc < hidden_auc < 0.85
    st = generate_criteo(tmp_path / 'again.txt', 15_000, seed=12)
    assert abs(st['hidden_auc'] - hidden_auc) < 0.002


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / 'train.txt'
    calls = []
    real = synthetic.encode_chunk

    def failing(chunk, fmt='kaggle'):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError('disk on fire')
        return real(chunk, fmt)

    monkeypatch.setattr(synthetic, 'encode_chunk', failing)
    with pytest.raises(RuntimeError):
        generate_criteo(target, 100_000, seed=0, chunk_rows=10_000, workers=1)
    assert os.listdir(tmp_path) == []  # neither the file nor a temporary one
    target.write_text('old\n')
    calls.clear()
    with pytest.raises(RuntimeError):
        generate_criteo(target, 100_000, seed=0, chunk_rows=10_000, workers=2)
    assert os.listdir(tmp_path) == ['train.txt']
    assert target.read_text() == 'old\n'  # the previous file is untouched
    monkeypatch.setattr(synthetic, 'encode_chunk', real)
    generate_criteo(target, 1_000, seed=0)  # (with its line index, written as the file is: modelzoo/line_index.py)
    assert sorted(os.listdir(tmp_path)) == ['.train.txt.index.json', 'train.txt'] and len(read_rows(target)) == 1_000


def test_cli_writes_and_cleans_up_on_sigterm(tmp_path):
    out = tmp_path / 'gen.csv'
    proc = subprocess.run([sys.executable, 'data/generate_criteo.py', '--rows', '2000',
                           '--output', str(out), '--seed', '3'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and '2000 rows' in proc.stdout and 'csv' in proc.stdout
    lib = tmp_path / 'lib.csv'
    generate_criteo(lib, 2000, seed=3)
    assert out.read_bytes() == lib.read_bytes()

    # A long run stopped with SIGTERM: no final file and no temporary file.
    big = tmp_path / 'big' / 'train.txt'
    proc = subprocess.Popen([sys.executable, 'data/generate_criteo.py', '--rows', '50000000',
                             '--output', str(big)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if big.parent.is_dir() and any(p.name.endswith('.tmp') for p in big.parent.iterdir()):
                break
            time.sleep(0.05)
        else:
            pytest.fail('the generator never created its temporary file')
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert list(big.parent.iterdir()) == []


def test_describe_cli(sample):
    path, _, _ = sample
    proc = subprocess.run([sys.executable, 'data/generate_criteo.py', '--describe', str(path),
                           '--describe_rows', '1000'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r'^rows\s+1000$', proc.stdout, re.M)
    assert re.search(r'^C26_distinct\s+\d+$', proc.stdout, re.M)


def test_baseline_cli(tmp_path):
    """The --baseline measurement (hashed logistic regression) runs and reports an AUC."""
    train, held_out = tmp_path / 'train.txt', tmp_path / 'held_out.csv'
    generate_criteo(train, 3_000, seed=21)
    generate_criteo(held_out, 1_000, seed=22)
    proc = subprocess.run([sys.executable, 'data/generate_criteo.py', '--baseline', str(train),
                           str(held_out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    auc = float(re.search(r'AUC ([0-9.]+) on 1000 rows', proc.stdout).group(1))
    assert 0.55 < auc < 0.9


@pytest.fixture
def real_sample():
    if not CRITEO_SAMPLE.is_file():
        pytest.skip('real Criteo sample not found at %s (../shared/data beside the checkout); '
                    'the comparison with real statistics needs it' % CRITEO_SAMPLE)
    return CRITEO_SAMPLE


def test_statistics_close_to_real_sample(real_sample, sample):
    """Generated rows vs the first 9,999 real rows: same missing rates, similar skew."""
    path, _, _ = sample
    real = describe_criteo_file(real_sample)
    gen = describe_criteo_file(path, max_rows=real['rows'])
    assert real['rows'] == 9_999
    for c in INT_COLUMNS + CAT_COLUMNS:
        assert abs(real[c + '_missing'] - gen[c + '_missing']) < 0.02, c
    for c in INT_COLUMNS:
        assert abs(real[c + '_zero'] - gen[c + '_zero']) < 0.03, c
        assert 0.5 <= (gen[c + '_p90'] + 1) / (real[c + '_p90'] + 1) <= 2, c
    for c in CAT_COLUMNS:
        assert abs(real[c + '_top_share'] - gen[c + '_top_share']) < 0.03, c
        if real[c + '_distinct'] >= 100:
            ratio = gen[c + '_distinct'] / real[c + '_distinct']
            assert 0.8 <= ratio <= 1.25, (c, ratio)


def test_real_sample_has_the_schema_we_write(real_sample):
    """The real file and ours agree on the format (40 tab-separated fields, 8-hex ids)."""
    rows = read_rows(real_sample)
    assert len(rows) == 9_999 and {len(r) for r in rows} == {40}
    assert all(v == '' or HEX8.fullmatch(v) for r in rows[:500] for v in r[14:])
    assert all(v == '' or str(int(v)) == v for r in rows[:500] for v in r[1:14])
