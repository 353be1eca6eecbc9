#!/usr/bin/env python
"""Write synthetic Criteo Kaggle-format data, or describe a Criteo-format file.

Why: the real Criteo data may not be redistributed, but examples, tests and
benchmarks need data with its schema and statistics.  The generator lives in
modelzoo/synthetic.py (numpy only); this is its command line.

    python data/generate_criteo.py --rows 1000000 --output data/criteo/train.txt
    python data/generate_criteo.py --rows 100000 --output /tmp/train.csv --format csv
    python data/generate_criteo.py --describe REAL_train.txt /tmp/train.txt --describe_rows 9999
    python data/generate_criteo.py --baseline /tmp/train.txt /tmp/heldout.txt   # needs scikit-learn
"""
import argparse
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelzoo.synthetic import (  # noqa: E402
    CAT_COLUMNS, INT_COLUMNS, describe_criteo_file, generate_criteo)


def _terminate(signum, frame):
    # Turn SIGTERM into an exception so the temporary file is removed.
    raise SystemExit(128 + signum)


def _describe(paths, max_rows):
    stats = [describe_criteo_file(p, max_rows) for p in paths]
    keys = ['rows', 'ctr']
    for c in INT_COLUMNS:
        keys += [c + s for s in ('_missing', '_zero', '_p50', '_p90', '_p99', '_min', '_max')]
    for c in CAT_COLUMNS:
        keys += [c + s for s in ('_missing', '_distinct', '_singletons', '_top_share')]
    names = [os.path.basename(os.path.dirname(os.path.abspath(p))) + '/' + os.path.basename(p)
             for p in paths]
    width = max(12, *(len(n) for n in names))
    print('%-14s' % 'statistic' + ''.join(' %*s' % (width, n) for n in names))
    for k in keys:
        cells = []
        for st in stats:
            v = st.get(k)
            if v is None:
                cells.append('-')
            elif isinstance(v, float) and (k.endswith('_missing') or k.endswith('_zero')
                                           or k.endswith('_share') or k == 'ctr'):
                cells.append('%.4f' % v)
            elif isinstance(v, float):
                cells.append('%g' % v)
            else:
                cells.append(str(v))
        print('%-14s' % k + ''.join(' %*s' % (width, c) for c in cells))


def _hashed_rows(path, max_rows=None):
    """Criteo-style tokens per row: C<k>=<id>, I<j>=floor(log(x)^2) (x > 2)."""
    import gzip
    import math

    def bucket(v):
        if v == '':
            return 'na'
        x = int(v)
        return str(int(math.log(x) ** 2)) if x > 2 else v

    labels, rows = [], []
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'rt') as f:
        for i, line in enumerate(f):
            if max_rows is not None and i >= max_rows:
                break
            line = line.rstrip('\n')
            fs = line.split('\t') if '\t' in line else line.split(',')
            labels.append(int(fs[0]))
            rows.append(['I%d=%s' % (j, bucket(fs[j])) for j in range(1, 14)]
                        + ['C%d=%s' % (k - 13, fs[k]) for k in range(14, 40)])
    return rows, labels


def hashed_lr_auc(train, heldout, max_rows=None):
    """AUC of a hashed logistic regression (2^20 buckets, C=0.1): how learnable a data set is.
    Returns (auc, training rows, held-out rows)."""
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    hasher = FeatureHasher(n_features=1 << 20, input_type='string', alternate_sign=False)
    rows, ytr = _hashed_rows(train, max_rows)
    Xtr = hasher.transform(rows)
    rows, yte = _hashed_rows(heldout, max_rows)
    Xte = hasher.transform(rows)
    model = LogisticRegression(C=0.1, solver='liblinear').fit(Xtr, ytr)
    return roc_auc_score(yte, model.decision_function(Xte)), len(ytr), len(yte)


def dense_lr_auc(train_lines, heldout_lines):
    """Held-out AUC of a logistic regression on the 13 integer columns alone (log1p of the counts, as the
    models normalize them; missing = 0) of Kaggle TSV lines: what a model scores with no help from the
    categorical columns, so a model whose embeddings work must beat it."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    def columns(lines):
        fields = [line.rstrip('\r\n').split('\t') for line in lines]
        counts = np.array([[float(v or 0) for v in f[1:14]] for f in fields])
        return np.log1p(np.maximum(counts, 0)), np.array([int(f[0]) for f in fields])
    (xtr, ytr), (xte, yte) = columns(train_lines), columns(heldout_lines)
    fit = LogisticRegression(max_iter=1000).fit(xtr, ytr)
    return float(roc_auc_score(yte, fit.predict_proba(xte)[:, 1]))


def _baseline(train, heldout, max_rows):
    auc, ntr, nte = hashed_lr_auc(train, heldout, max_rows)
    print('hashed logistic regression (2^20 buckets, C=0.1): trained on %d rows of %s, '
          'AUC %.4f on %d rows of %s' % (ntr, train, auc, nte, heldout))


def main(argv=None):
    p = argparse.ArgumentParser(
        description='Generate synthetic Criteo Display Advertising Challenge (Kaggle) '
                    'format data with the real schema and statistics, or describe files.')
    p.add_argument('--rows', type=int, default=100_000, help='rows to generate')
    p.add_argument('--output', help='file to write; .csv means DeepRec CSV, .gz means gzip')
    p.add_argument('--seed', type=int, default=0,
                   help='random seed (ids of a given frequency rank are the same for every seed)')
    p.add_argument('--format', choices=('kaggle', 'csv'), default=None,
                   help='kaggle: tab-separated train.txt; csv: DeepRec comma-separated '
                        '(default: from the --output suffix)')
    p.add_argument('--chunk_rows', type=int, default=100_000,
                   help='rows generated per step (bounds memory; the output does not depend on it)')
    p.add_argument('--workers', type=int, default=None,
                   help='generator threads (default 2, or 1 on a 1-CPU machine)')
    p.add_argument('--describe', nargs='+', metavar='FILE',
                   help='print statistics of these Criteo-format files instead of generating')
    p.add_argument('--describe_rows', type=int, default=None,
                   help='with --describe or --baseline: read at most this many rows of each file')
    p.add_argument('--baseline', nargs=2, metavar=('TRAIN', 'HELDOUT'),
                   help='train a hashed logistic regression on TRAIN and print its AUC on '
                        'HELDOUT (needs scikit-learn); --describe_rows limits the rows')
    args = p.parse_args(argv)

    if args.baseline:
        _baseline(args.baseline[0], args.baseline[1], args.describe_rows)
        return 0
    if args.describe:
        _describe(args.describe, args.describe_rows)
        return 0
    if not args.output:
        p.error('--output is required (or use --describe)')
    if args.rows < 0:
        p.error('--rows must be >= 0')
    if args.seed < 0:
        p.error('--seed must be >= 0')
    signal.signal(signal.SIGTERM, _terminate)
    st = generate_criteo(args.output, args.rows, seed=args.seed, fmt=args.format,
                         chunk_rows=args.chunk_rows, workers=args.workers)
    print('wrote %s: %d rows (%s format, %d bytes), %d positives, CTR %.4f, '
          'hidden-model AUC %.4f, %.1f s (%.0f rows/s), seed %d'
          % (st['path'], st['rows'], st['fmt'], st['bytes'], st['positives'], st['ctr'],
             st['hidden_auc'], st['seconds'], st['rows_per_second'], st['seed']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
