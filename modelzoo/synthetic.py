"""Synthetic Criteo Display Advertising Challenge (Kaggle) data.

Why: the real data (45.8M rows, ~11 GB) may not be redistributed, yet tests,
examples and quick benchmarks need data with the real schema and the real
"shape" (missing values, power-law id frequencies, heavy-tailed counts, a
learnable label).  This module produces it from numbers only: every constant
below is a *statistic* measured on the first 9,999 rows of the Kaggle
``train.txt`` (or the well-known full-data cardinalities); no data row or id
string of the real data is contained here.

Model of a row (all vectorized numpy, per chunk):

* Missing values come in groups, as in the real data (I1 and I10 are always
  missing together, so are I4/I13, I7/I9/I11, C3/C4/C12/C16/C21/C24 and
  C19/C20/C25/C26).
* Integer columns: a Gaussian copula with the real correlation matrix of
  ``log1p(I)``; each marginal is a point mass at 0 (and at -1/-2 for I2) plus a
  two-piece log-normal, fitted to the real quantiles (heavy tails: I5 reaches
  the millions).
* Categorical columns: the id of frequency rank ``r`` in column ``c`` is a
  bijective 32-bit hash of (c, r) printed as 8 lowercase hex digits, so the
  same ids recur in files made with different seeds and a column never has
  more than its real cardinality.  Ranks are drawn from the real top-rank
  shares followed by a Zipf-Mandelbrot tail whose exponent reproduces the
  number of distinct ids seen in the real sample.  Columns that are
  (almost) functions of each other in the real data (C3 -> C4/C12/C16/C21/C24,
  C15 -> C18 -> C2, C7 -> C13) share their rank uniform, which makes them
  nearly functions of each other here too.
* Label: Bernoulli(sigmoid(hidden logit)); the logit is an intercept
  (calibrated to a CTR of about 25%) + weights on standardized
  ``log1p(I)`` and missing indicators (a logistic regression fitted on the
  real sample) + per-id effects derived from the id hash + a small
  factorization-machine style interaction between low-cardinality columns,
  so that there is something for both linear and deep models to learn.

Randomness comes in fixed blocks of rows, each block with its own generator
seeded by ``(seed, block index)``: the output depends only on ``seed`` and
``rows`` (not on ``chunk_rows``), and a shorter file is a prefix of a longer
one with the same seed.
"""

import collections
import fcntl
import gzip
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from modelzoo.line_index import IndexingWriter

__all__ = [
    'COLUMNS', 'INT_COLUMNS', 'CAT_COLUMNS', 'CRITEO_KAGGLE_CARDINALITIES',
    'INT_MISSING_RATES', 'CAT_MISSING_RATES', 'TARGET_CTR',
    'generate_criteo', 'iter_chunks', 'encode_chunk', 'format_ids',
    'column_ids', 'binned_auc', 'describe_criteo_file',
]

INT_COLUMNS = ['I%d' % i for i in range(1, 14)]
CAT_COLUMNS = ['C%d' % i for i in range(1, 27)]
COLUMNS = ['label'] + INT_COLUMNS + CAT_COLUMNS

# Distinct values per column in the full Kaggle train.txt (45,840,617 rows).
CRITEO_KAGGLE_CARDINALITIES = {
    'C1': 1460, 'C2': 583, 'C3': 10131227, 'C4': 2202608, 'C5': 305,
    'C6': 24, 'C7': 12517, 'C8': 633, 'C9': 3, 'C10': 93145, 'C11': 5683,
    'C12': 8351593, 'C13': 3194, 'C14': 27, 'C15': 14992, 'C16': 5461306,
    'C17': 10, 'C18': 5652, 'C19': 2173, 'C20': 4, 'C21': 7046547,
    'C22': 18, 'C23': 15, 'C24': 286181, 'C25': 105, 'C26': 142572,
}

TARGET_CTR = 0.25

# Missing-value groups: (rate, columns missing together).  Integer rates are
# those of the data README; categorical rates were measured on the sample.
_INT_MISSING_GROUPS = [
    (0.448, ('I1', 'I10')), (0.0, ('I2',)), (0.204, ('I3',)),
    (0.198, ('I4', 'I13')), (0.049, ('I5',)), (0.251, ('I6',)),
    (0.049, ('I7', 'I9', 'I11')), (0.001, ('I8',)), (0.773, ('I12',)),
]
_CAT_MISSING_GROUPS = [
    (0.0357, ('C3', 'C4', 'C12', 'C16', 'C21', 'C24')), (0.1331, ('C6',)),
    (0.4496, ('C19', 'C20', 'C25', 'C26')), (0.8182, ('C22',)),
]
INT_MISSING_RATES = {c: r for r, cs in _INT_MISSING_GROUPS for c in cs}
CAT_MISSING_RATES = {c: 0.0 for c in CAT_COLUMNS}
CAT_MISSING_RATES.update({c: r for r, cs in _CAT_MISSING_GROUPS for c in cs})

# Integer marginals, in terms of the copula's standard normal z:
# (z below which -2, z below which -1, z below which 0, z_mid, log_mid,
#  sigma below z_mid, sigma above z_mid); positive values are
# round(exp(log_mid + sigma * (z - z_mid))) >= 1.  Fitted to real quantiles.
_NINF = -np.inf
_INT_MARGINALS = {
    'I1': (_NINF, _NINF, -0.062, 0.639, 0.966, 1.819, 1.702),
    'I2': (-3.239, -1.296, -0.592, 0.357, 2.634, 3.667, 2.749),
    'I3': (_NINF, _NINF, -2.407, 0.013, 1.825, 1.218, 1.722),
    'I4': (_NINF, _NINF, -1.465, 0.092, 1.621, 1.361, 1.099),
    'I5': (_NINF, _NINF, -2.129, 0.023, 8.183, 4.143, 1.767),
    'I6': (_NINF, _NINF, -1.531, 0.080, 3.965, 2.430, 1.533),
    'I7': (_NINF, _NINF, -0.666, 0.324, 1.671, 2.057, 1.810),
    'I8': (_NINF, _NINF, -1.186, 0.150, 2.449, 2.073, 0.851),
    'I9': (_NINF, _NINF, -1.855, 0.041, 3.891, 2.283, 1.450),
    'I10': (_NINF, _NINF, 0.004, 0.679, -0.107, -0.237, 0.566),
    'I11': (_NINF, _NINF, -0.628, 0.340, 0.300, 0.475, 1.444),
    'I12': (_NINF, _NINF, 0.632, 1.122, 0.168, 0.505, 2.127),
    'I13': (_NINF, _NINF, -1.542, 0.079, 1.760, 1.428, 1.232),
}
_INT_MAX = 2 ** 31 - 1  # keeps every integer field within 10 characters
(_IM_ZN2, _IM_ZN1, _IM_Z0, _IM_ZMID, _IM_LOGMID, _IM_SLO, _IM_SHI) = (
    np.array(p) for p in zip(*[_INT_MARGINALS[c] for c in INT_COLUMNS]))

# Correlation of log1p(max(I, 0)) in the real sample (pairwise complete).
_INT_CORR = np.array([
    [1.00, 0.01, 0.07, 0.09, -0.63, -0.53, 0.43, 0.05, -0.15, 0.77, 0.22, 0.19, -0.15],
    [0.01, 1.00, -0.10, -0.12, -0.02, -0.02, 0.02, 0.00, 0.02, 0.02, 0.02, 0.00, -0.09],
    [0.07, -0.10, 1.00, 0.33, -0.10, 0.10, 0.02, 0.29, 0.07, 0.04, 0.01, 0.02, 0.34],
    [0.09, -0.12, 0.33, 1.00, -0.12, 0.16, 0.12, 0.57, 0.33, 0.07, 0.11, 0.00, 0.73],
    [-0.63, -0.02, -0.10, -0.12, 1.00, 0.64, -0.34, -0.15, 0.08, -0.75, -0.35, -0.25, 0.17],
    [-0.53, -0.02, 0.10, 0.16, 0.64, 1.00, -0.23, 0.23, 0.50, -0.61, -0.23, -0.19, 0.46],
    [0.43, 0.02, 0.02, 0.12, -0.34, -0.23, 1.00, 0.18, 0.43, 0.22, 0.87, 0.14, 0.01],
    [0.05, 0.00, 0.29, 0.57, -0.15, 0.23, 0.18, 1.00, 0.46, 0.03, 0.20, 0.05, 0.59],
    [-0.15, 0.02, 0.07, 0.33, 0.08, 0.50, 0.43, 0.46, 1.00, -0.20, 0.48, -0.06, 0.38],
    [0.77, 0.02, 0.04, 0.07, -0.75, -0.61, 0.22, 0.03, -0.20, 1.00, 0.23, 0.18, -0.17],
    [0.22, 0.02, 0.01, 0.11, -0.35, -0.23, 0.87, 0.20, 0.48, 0.23, 1.00, 0.12, 0.01],
    [0.19, 0.00, 0.02, 0.00, -0.25, -0.19, 0.14, 0.05, -0.06, 0.18, 0.12, 1.00, -0.06],
    [-0.15, -0.09, 0.34, 0.73, 0.17, 0.46, 0.01, 0.59, 0.38, -0.17, 0.01, -0.06, 1.00],
])

# Rank distributions: (shares of the top ranks, tail exponent a, tail
# offset q).  Ranks after the listed ones follow p(r) ~ (r + q)^-a.  Top
# shares were measured on the sample; (a, q) make the tail continue the head
# and reproduce the sample's number of distinct ids.  Columns with at most
# 128 ids list the share of every id seen in the sample, and the ids never
# seen there share a small uniform tail (a = 0; 0.1 pseudo-count each).
_CAT_RANKS = {
    'C1': ((0.5005, 0.1717, 0.08401, 0.048, 0.0341), 1.7357, 1.667),
    'C2': ((0.1235, 0.06521, 0.0467, 0.0348, 0.0346), 2.3114, 24.61),
    'C3': ((0.04875, 0.03433, 0.02811, 0.01753, 0.01545), 1.0119, 2.582),
    'C4': ((0.07571, 0.0642, 0.03526, 0.01867, 0.01379), 1.1093, 6.871),
    'C5': ((0.6656, 0.1538, 0.06411, 0.0353, 0.0226), 1.9678, 0.5435),
    'C6': ((
        0.5298, 0.2238, 0.1418, 0.04775, 0.03956, 0.01684, 0.000346), 0.0, 0.0),
    'C7': ((0.0105, 0.008601, 0.008301, 0.008201, 0.007501), 1.1986, 35.29),
    'C8': ((0.5888, 0.1701, 0.07681, 0.0414, 0.0268), 1.9182, 1.358),
    'C9': ((0.8871, 0.1125, 0.0004), 0.0, 0.0),
    'C10': ((0.2757, 0.0105, 0.0104, 0.006901, 0.006701), 1.2119, 24.88),
    'C11': ((0.0203, 0.0197, 0.0133, 0.0102, 0.009201), 1.4338, 48.37),
    'C12': ((0.04875, 0.03433, 0.02811, 0.01753, 0.01545), 1.0305, 3.228),
    'C13': ((0.0221, 0.0204, 0.0149, 0.0129, 0.0119), 1.3801, 34.03),
    'C14': ((
        0.3629, 0.3456, 0.1604, 0.0361, 0.0245, 0.0226, 0.014, 0.0108,
        0.007, 0.0045, 0.0026, 0.0025, 0.0012, 0.0008001, 0.0007,
        0.0006, 0.0006, 0.0006, 0.0005, 0.0005, 0.0004, 0.0003,
        0.0001, 0.0001), 0.0, 0.0),
    'C15': ((0.0195, 0.015, 0.0119, 0.01, 0.009901), 1.6076, 57.53),
    'C16': ((0.04875, 0.03433, 0.02811, 0.01753, 0.01545), 1.0773, 5.022),
    'C17': ((
        0.4303, 0.1333, 0.1269, 0.07691, 0.06021, 0.0494, 0.0442,
        0.042, 0.0367), 0.0, 0.0),
    'C18': ((0.05101, 0.029, 0.0223, 0.0205, 0.0189), 1.8092, 35.47),
    'C19': ((0.6013, 0.03653, 0.02199, 0.01545, 0.008723), 1.382, 14.62),
    'C20': ((0.3616, 0.322, 0.3164), 0.0, 0.0),
    'C21': ((0.04875, 0.03433, 0.02811, 0.01753, 0.01545), 1.0508, 3.976),
    'C22': ((
        0.5255, 0.3837, 0.03738, 0.03188, 0.01814, 0.002199, 0.0005497), 0.0, 0.0),
    'C23': ((
        0.4514, 0.2024, 0.1045, 0.07241, 0.0605, 0.0406, 0.0315,
        0.0141, 0.0107, 0.0049, 0.0045, 0.0024), 0.0, 0.0),
    'C24': ((0.0783, 0.07737, 0.07135, 0.05995, 0.03505), 1.1485, 1.96),
    'C25': ((
        0.328, 0.1982, 0.1129, 0.06534, 0.04483, 0.04374, 0.03485,
        0.02795, 0.02759, 0.02269, 0.01742, 0.0118, 0.0118, 0.006897,
        0.005264, 0.004719, 0.003993, 0.003993, 0.003993, 0.00363,
        0.002904, 0.002541, 0.00236, 0.001634, 0.001452, 0.001271,
        0.001271, 0.0009075, 0.0009075, 0.0009075, 0.000726, 0.000726,
        0.0005445, 0.0001815, 0.0001815, 0.0001815, 0.0001815,
        0.0001815, 0.0001815), 0.0, 0.0),
    'C26': ((0.0825, 0.03271, 0.02744, 0.02362, 0.02253), 1.166, 5.822),
}

# Columns that share one rank uniform (first = finest), see module docstring.
_RANK_GROUPS = [
    ('C3', 'C4', 'C12', 'C16', 'C21', 'C24'), ('C15', 'C18', 'C2'),
    ('C7', 'C13'),
]

# Hidden label model.  Integer part: logistic regression fitted on the real
# sample over (log1p(max(I,0)) - mean) / std and missing indicators.
_LOG_MEAN = np.array([0.796, 2.124, 2.249, 1.728, 7.236, 3.584, 1.54, 2.056,
                      3.609, 0.376, 0.852, 0.299, 1.88])
_LOG_STD = np.array([0.976, 2.133, 1.279, 0.962, 2.897, 1.807, 1.358, 1.179,
                     1.692, 0.394, 0.739, 0.606, 1.059])
_INT_WEIGHT = np.array([0.034, 0.087, -0.16, 0.149, -0.269, -0.329, 0.236,
                        -0.095, -0.015, -0.149, 0.134, 0.122, -0.257])
_INT_MISSING_WEIGHT = np.array([0.088, 0.0, 0.208, 0.119, -0.839, -0.437,
                                -0.082, -0.001, -0.082, 0.088, -0.082, 0.276,
                                0.119])
# Standard deviation of the per-id effect of each categorical column.
_CAT_EFFECT_SCALE = 0.2
# Interaction term between low-cardinality columns (dot products of 4-d
# per-id vectors), total standard deviation _FM_SCALE.
_FM_COLUMNS = ('C1', 'C2', 'C5', 'C6', 'C8', 'C9', 'C14', 'C17', 'C20',
               'C23', 'C25')
_FM_DIM = 4  # one byte of a 32-bit hash per coordinate
_FM_SCALE = 0.5
# Calibrated by simulation (1M rows) so that the CTR is about TARGET_CTR.
_INTERCEPT = -1.71

_BLOCK = 4096  # rows per independently seeded block of randomness
_WORK_ROWS = 8 * _BLOCK  # rows per generation step (fastest on small caches)
_SALT = 0x43726974  # 'Crit': separates these seeds from other users' seeds

_NI = len(INT_COLUMNS)
_NC = len(CAT_COLUMNS)
_CIDX = {c: i for i, c in enumerate(CAT_COLUMNS)}
_IIDX = {c: i for i, c in enumerate(INT_COLUMNS)}


def _fmix32(h):
    """MurmurHash3 finalizer: a bijection on uint32, so ids never collide."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _keys(tag, n):
    """Fixed per-column hash keys, derived from a tag (no hidden state)."""
    base = np.arange(1, n + 1, dtype=np.uint32) * np.uint32(0x9E3779B9)
    return _fmix32(base ^ np.uint32(tag))


_ID_KEYS = _keys(0x1D5EED01, _NC)
_EFFECT_KEYS = _keys(0xEFFEC702, _NC)
_FM_KEYS = _keys(0xF3A7C003, _NC)


def _psd_cholesky(corr):
    """Cholesky factor of the (rounded) correlation matrix, repaired to PSD."""
    w, v = np.linalg.eigh(corr)
    c = (v * np.maximum(w, 1e-3)) @ v.T
    d = np.sqrt(np.diag(c))
    return np.linalg.cholesky(c / np.outer(d, d))


_INT_CHOL = _psd_cholesky(_INT_CORR)


class _RankSampler:
    """Maps uniforms to frequency ranks for all 26 columns at once.

    The map is monotone in u, so columns that share a uniform get nested ids.
    Head ranks come from a table over u in steps of 1/65536 (their shares are
    quantized to that), tail ranks from the inverse CDF of the continuous
    tail p(x) ~ x^-a on [q+1, q+n_tail+1), floored; the inverse CDF is
    tabulated at 4096 points and interpolated linearly (relative error below
    1e-5, and far cheaper than pow() per value).  Ranks never reach a
    column's cardinality.  Internally the columns with a tail come first, so
    that they are a slice (no copies).
    """

    Q = 65536  # head resolution
    K = 4096  # tail table points

    def __init__(self, columns):
        Q, K = self.Q, self.K
        cards = [CRITEO_KAGGLE_CARDINALITIES[c] for c in columns]
        has_tail = [cards[k] > len(_CAT_RANKS[c][0]) for k, c in enumerate(columns)]
        self.order = np.array([k for k in range(len(columns)) if has_tail[k]]
                              + [k for k in range(len(columns)) if not has_tail[k]])
        self.unorder = np.argsort(self.order)
        self.n_tail_cols = int(sum(has_tail))
        nc = len(columns)
        lut = np.zeros((nc, Q), dtype=np.uint8)  # small: stays in cache
        hb, tables = [], []
        for k, col in enumerate(self.order):
            c = columns[col]
            head, a, q = _CAT_RANKS[c]
            card = cards[col]
            head = np.asarray(head, dtype=np.float64)
            if card <= len(head):  # the head covers every rank
                head = head / head.sum()
            edges = np.rint(np.cumsum(head) * Q).astype(np.int64)
            edges = np.minimum(edges, Q - 1 if card > len(head) else Q)
            lut[k] = np.minimum(np.searchsorted(edges, np.arange(Q), side='right'), card - 1)
            hb.append(int(edges[-1]))
            if card > len(head):
                nt = card - len(head)
                e = 1.0 - float(a)
                if abs(e) < 1e-6:  # a == 1 is a limit case; nudge (no column has it)
                    e = 1e-6
                lo, hi = q + 1.0, q + nt + 1.0
                v = np.arange(K + 1) / K
                x = (lo ** e + v * (hi ** e - lo ** e)) ** (1.0 / e) - lo
                tables.append(len(head) + np.clip(x, 0.0, nt - 1e-6))  # float ranks
        self.lut_flat = lut.reshape(-1)
        self.lut_base = (np.arange(nc) * Q)[:, None]
        nt = self.n_tail_cols
        hm = np.array(hb[:nt]) / Q
        self.t_hm = hm[:, None]
        self.t_scale = (K / np.maximum(1.0 - hm, 1.0 / Q))[:, None]
        table = np.stack(tables)
        # value and slope in one complex number: one gather instead of two
        self.t_table = (table[:, :-1] + 1j * np.diff(table, axis=1)).reshape(-1)
        self.t_base = (np.arange(nt) * K)[:, None]

    def __call__(self, u):
        """u: (ncols, n) uniforms in [0, 1) -> (ncols, n) int64 ranks."""
        u = u[self.order]
        b = (u * self.Q).astype(np.int64)
        b += self.lut_base
        ranks = self.lut_flat[b].astype(np.int64)
        nt = self.n_tail_cols
        pos = u[:nt]
        pos -= self.t_hm
        pos *= self.t_scale  # position in the tail table, < 0 in the head
        head = pos < 0
        np.clip(pos, 0.0, self.K - 1e-9, out=pos)
        i = pos.astype(np.int64)
        pos -= i  # fraction
        i += self.t_base
        tab = self.t_table[i]
        x = tab.imag * pos
        x += tab.real
        tail = x.astype(np.int64)
        np.copyto(tail, ranks[:nt], where=head)
        ranks[:nt] = tail
        return ranks[self.unorder]


_SAMPLER = _RankSampler(CAT_COLUMNS)

# Uniform layout per row: label, int missing groups, cat missing groups,
# rank groups (each column not in a shared group has its own).
_rank_group_of = {}
for _g in _RANK_GROUPS:
    for _c in _g:
        _rank_group_of[_c] = _g[0]
_RANK_UNIFORMS = sorted({_rank_group_of.get(c, c) for c in CAT_COLUMNS},
                        key=lambda c: _CIDX[c])
_U_LABEL = 0
_U_IMISS = 1
_U_CMISS = _U_IMISS + len(_INT_MISSING_GROUPS)
_U_RANK = _U_CMISS + len(_CAT_MISSING_GROUPS)
_NU = _U_RANK + len(_RANK_UNIFORMS)
_RANK_U_COL = np.array([_U_RANK + _RANK_UNIFORMS.index(_rank_group_of.get(c, c))
                        for c in CAT_COLUMNS])
_FM_IDX = np.array([_CIDX[c] for c in _FM_COLUMNS])
_IMISS_U = np.array([_U_IMISS + k for c in INT_COLUMNS
                     for k, (_, cs) in enumerate(_INT_MISSING_GROUPS) if c in cs])
_IMISS_RATE = np.array([INT_MISSING_RATES[c] for c in INT_COLUMNS])
_CMISS_U = np.array([_U_CMISS + ([k for k, (_, cs) in enumerate(_CAT_MISSING_GROUPS)
                                  if c in cs] or [0])[0] for c in CAT_COLUMNS])
_CMISS_RATE = np.array([CAT_MISSING_RATES[c] for c in CAT_COLUMNS])


def column_ids(column, ranks):
    """The uint32 ids of frequency ranks of a column (stable across seeds)."""
    ranks = np.asarray(ranks, dtype=np.uint32)
    return _fmix32(ranks ^ _ID_KEYS[_CIDX[column]])


def format_ids(ids):
    """uint32 ids -> array of 8-lowercase-hex-digit strings (as in the data)."""
    return np.array(['%08x' % int(i) for i in np.ravel(ids)]).reshape(np.shape(ids))


# Per-id effects are looked up from hash bits (fast, exact across machines):
# 16 bits -> a unit-variance logistic quantile; 8 bits -> a unit-variance
# uniform coordinate of the interaction vector.
_EFFECT_TABLE = ((np.arange(65536) + 0.5) / 65536.0)
_EFFECT_TABLE = (np.log(_EFFECT_TABLE / (1.0 - _EFFECT_TABLE))
                 * (np.sqrt(3.0) / np.pi)).astype(np.float32)
_FM_TABLE = (((np.arange(256) + 0.5) / 256.0 - 0.5) * np.sqrt(12.0)).astype(np.float32)


def _randoms(seed, start, n):
    """Uniforms (_NU, n) and normals (_NI, n) of rows [start, start+n).

    Each block of _BLOCK rows has its own generators, seeded by (seed, block
    index), so any row range is reproducible on its own.  Arrays are
    column-major (one row per stream): per-column work is then contiguous.
    """
    u = np.empty((_NU, n))
    e = np.empty((_NI, n))
    row, end = start, start + n
    while row < end:
        b, off = divmod(row, _BLOCK)
        take = min(_BLOCK - off, end - row)
        i = row - start
        u[:, i:i + take] = np.random.default_rng(
            [_SALT, seed, b, 0]).random((_NU, _BLOCK))[:, off:off + take]
        e[:, i:i + take] = np.random.default_rng(
            [_SALT, seed, b, 1]).standard_normal((_NI, _BLOCK))[:, off:off + take]
        row += take
    return u, e


def _make_chunk(seed, start, n):
    """Rows [start, start+n) as arrays; internally column-major (C, n)."""
    u, e = _randoms(seed, start, n)

    # Missing masks (grouped: columns of a group share one uniform).
    int_missing = u[_IMISS_U] < _IMISS_RATE[:, None]
    cat_missing = u[_CMISS_U] < _CMISS_RATE[:, None]

    # Integers: correlated normals -> fitted marginals.
    z = np.einsum('jk,kn->jn', _INT_CHOL, e)  # einsum: no BLAS threads
    d = z - _IM_ZMID[:, None]
    logv = np.where(d < 0, _IM_SLO[:, None] * d, _IM_SHI[:, None] * d)
    logv += _IM_LOGMID[:, None]
    np.minimum(logv, 21.5, out=logv)
    v = np.rint(np.exp(logv))
    np.clip(v, 1, _INT_MAX, out=v)
    ints = v.astype(np.int64)
    ints[z < _IM_Z0[:, None]] = 0
    ints[z < _IM_ZN1[:, None]] = -1
    ints[z < _IM_ZN2[:, None]] = -2

    # Categorical ranks -> ids.
    ranks = _SAMPLER(u[_RANK_U_COL])
    ids = _fmix32(ranks.astype(np.uint32) ^ _ID_KEYS[:, None])

    # Hidden model.
    zint = np.log(np.maximum(ints, 0) + 1.0)
    zint -= _LOG_MEAN[:, None]
    zint *= (_INT_WEIGHT / _LOG_STD)[:, None]
    zint[int_missing] = 0.0
    logit = zint.sum(axis=0)
    logit += _INTERCEPT
    logit += np.einsum('j,jn->n', _INT_MISSING_WEIGHT, int_missing.astype(np.float64))
    effect = _EFFECT_TABLE[_fmix32(ids ^ _EFFECT_KEYS[:, None]) >> np.uint32(16)]
    effect[cat_missing] = 0.0
    logit += _CAT_EFFECT_SCALE * effect.sum(axis=0, dtype=np.float64)
    linear = logit.copy()  # the hidden model's linear part (what a logistic regression can reach)
    h = _fmix32(ids[_FM_IDX] ^ _FM_KEYS[_FM_IDX][:, None])
    vec = _FM_TABLE[h.astype('<u4', copy=False).view(np.uint8)
                    .reshape(len(_FM_IDX), n, _FM_DIM)]
    vec *= ~cat_missing[_FM_IDX][:, :, None]
    s = vec.sum(axis=0)
    pair = 0.5 * (np.einsum('nd,nd->n', s, s) - np.einsum('knd,knd->n', vec, vec))
    n_pairs = len(_FM_COLUMNS) * (len(_FM_COLUMNS) - 1) / 2
    logit += _FM_SCALE / np.sqrt(n_pairs * _FM_DIM) * pair.astype(np.float64)
    prob = 1.0 / (1.0 + np.exp(-logit))
    label = (u[_U_LABEL] < prob).astype(np.int8)

    # (n, C) views of the column-major arrays: no copies.
    return {'label': label, 'ints': ints.T, 'int_missing': int_missing.T,
            'cat_ids': ids.T, 'cat_missing': cat_missing.T, 'cat_ranks': ranks.T,
            'prob': prob, 'linear_logit': linear,
            'cat_effects': (_CAT_EFFECT_SCALE * effect).T}


def iter_chunks(rows, seed=0, chunk_rows=100_000, start=0):
    """Yield rows [start, start+rows) as dicts of numpy arrays.

    Keys: label (n,), ints (n,13) int64, int_missing (n,13), cat_ids (n,26)
    uint32, cat_missing (n,26), cat_ranks (n,26), prob (hidden-model click
    probability), linear_logit (the hidden logit without its pairwise
    term), cat_effects (n,26) (each id's share of it).  Useful for analysis
    without parsing text.
    """
    if seed < 0:
        raise ValueError('seed must be >= 0')
    chunk_rows = max(1, int(chunk_rows))
    done = 0
    while done < rows:
        n = min(chunk_rows, rows - done)
        yield _make_chunk(seed, start + done, n)
        done += n


# Lookup tables for text encoding (byte order as in memory, so
# endian-agnostic): 4 decimal digits per uint32, 4 hex digits per uint32, and
# per digit count the mask that keeps the last n of 12 characters.
_DEC4 = np.frombuffer(b''.join(b'%04d' % i for i in range(10000)), dtype=np.uint32)
_HEX4 = np.frombuffer(b''.join(b'%04x' % i for i in range(65536)), dtype=np.uint32)
_KEEP12 = np.frombuffer(b''.join(b'\x00' * (12 - k) + b'\xff' * k for k in range(13)),
                        dtype=np.uint32).reshape(13, 3)
_POW10 = 10 ** np.arange(19, dtype=np.int64)


def encode_chunk(chunk, fmt='kaggle'):
    """Encode a chunk as bytes: one line per row, 40 fields.

    Built as a fixed-width uint8 matrix padded with NUL bytes which are then
    deleted, so no per-row Python work is needed (this is what makes the
    generator fast).  Integers are formatted column-major, ids row-major,
    whichever way the chunk's arrays are laid out.
    """
    if fmt not in ('kaggle', 'csv'):
        raise ValueError("fmt must be 'kaggle' or 'csv', got %r" % (fmt,))
    sep = ord('\t') if fmt == 'kaggle' else ord(',')
    n = len(chunk['label'])
    ints = np.ascontiguousarray(np.asarray(chunk['ints'], dtype=np.int64).T)  # (13, n)
    imiss = np.ascontiguousarray(np.asarray(chunk['int_missing'], dtype=bool).T)
    a = np.abs(ints)
    neg = ints < 0
    neg &= ~imiss
    # Digit count (0 for a missing value, which then encodes as nothing).
    nd = np.searchsorted(_POW10, a, side='right')
    np.maximum(nd, 1, out=nd)
    nd[imiss] = 0
    # 12 right-aligned characters per value; the mask blanks leading zeros.
    groups = np.stack([_DEC4[a // 100000000 % 10000], _DEC4[a // 10000 % 10000],
                       _DEC4[a % 10000]], axis=-1)
    groups &= _KEEP12[nd]
    digits = groups.view(np.uint8).reshape(_NI, n, 12)
    cn, rn = np.nonzero(neg)
    digits[cn, rn, 11 - nd[cn, rn]] = ord('-')
    width = (nd + neg).max(axis=1) if n else np.zeros(_NI, np.int64)
    total = 1 + int(np.sum(width)) + _NI + _NC * 9 + 1
    buf = np.empty((n, total), dtype=np.uint8)
    buf[:, 0] = chunk['label']
    buf[:, 0] += 48
    col = 1
    for j in range(_NI):
        buf[:, col] = sep
        w = int(width[j])
        if w:
            buf[:, col + 1:col + 1 + w] = digits[j, :, 12 - w:]
        col += 1 + w
    ids = np.ascontiguousarray(chunk['cat_ids'], dtype=np.uint32)  # (n, 26)
    hexd = np.empty((n, _NC, 2), dtype=np.uint32)
    np.take(_HEX4, ids >> np.uint32(16), out=hexd[:, :, 0])
    np.take(_HEX4, ids & np.uint32(0xFFFF), out=hexd[:, :, 1])
    hexd *= ~np.asarray(chunk['cat_missing'], dtype=bool)[:, :, None]
    cats = buf[:, col:col + _NC * 9].reshape(n, _NC, 9)
    cats[:, :, 0] = sep
    cats[:, :, 1:] = hexd.view(np.uint8).reshape(n, _NC, 8)
    buf[:, -1] = ord('\n')
    return buf.tobytes().translate(None, b'\x00')


def binned_auc(pos_hist, neg_hist):
    """ROC AUC from score histograms (constant memory for any row count)."""
    pos_hist = np.asarray(pos_hist, dtype=np.float64)
    neg_hist = np.asarray(neg_hist, dtype=np.float64)
    p, q = pos_hist.sum(), neg_hist.sum()
    if p == 0 or q == 0:
        return float('nan')
    below = np.cumsum(neg_hist) - neg_hist
    return float((pos_hist * (below + 0.5 * neg_hist)).sum() / (p * q))


_AUC_BINS = 1 << 16
# gzip level 1: 3x faster than the default 6 for 15% larger files; the
# generator should not wait on the compressor.
_GZIP_LEVEL = 1


def _infer_fmt(path, fmt):
    if fmt is not None:
        return fmt
    p = os.fspath(path)
    if p.endswith('.gz'):
        p = p[:-3]
    return 'csv' if p.endswith('.csv') else 'kaggle'


def _encode_piece(seed, start, n, fmt):
    """Generate and encode rows [start, start+n); runs in a worker thread."""
    chunk = _make_chunk(seed, start, n)
    y = chunk['label'].astype(bool)
    b = np.minimum((chunk['prob'] * _AUC_BINS).astype(np.int64), _AUC_BINS - 1)
    return (encode_chunk(chunk, fmt), int(y.sum()),
            np.bincount(b[y], minlength=_AUC_BINS),
            np.bincount(b[~y], minlength=_AUC_BINS))


def _encoded_pieces(rows, seed, fmt, chunk_rows, workers):
    """Encoded pieces in row order, made by `workers` threads.

    numpy releases the GIL, so two threads nearly double the throughput on a
    2-CPU machine.  At most workers + 1 pieces are in memory at once.
    """
    step = max(1, min(int(chunk_rows), _WORK_ROWS))
    starts = range(0, rows, step)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers <= 1 or rows <= step:
        for start in starts:
            yield _encode_piece(seed, start, min(step, rows - start), fmt)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    pending = collections.deque()
    try:
        for start in starts:
            pending.append(pool.submit(_encode_piece, seed, start,
                                       min(step, rows - start), fmt))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)


def generate_criteo(path, rows, seed=0, fmt=None, chunk_rows=100_000,
                    workers=None):
    """Write `rows` synthetic rows to `path`; return statistics.

    fmt: 'kaggle' (tab-separated train.txt) or 'csv' (DeepRec); by default
    '.csv' (or '.csv.gz') means csv and anything else kaggle.  A path ending
    in '.gz' is gzip-compressed (deterministically: no name or time in the
    header).  The file is written to a temporary name in the same directory
    and renamed when complete, so readers never see a partial file.

    chunk_rows bounds memory (rows generated per step; steps are at most
    32768 rows, which keeps numpy's working set in cache); workers is the
    number of generator threads (default: 2, or 1 on a 1-CPU machine).  The
    output does not depend on either.

    Returns dict(path, rows, positives, ctr, hidden_auc, seconds,
    rows_per_second, bytes, fmt, seed).
    """
    path = os.fspath(path)
    fmt = _infer_fmt(path, fmt)
    if fmt not in ('kaggle', 'csv'):
        raise ValueError("fmt must be 'kaggle' or 'csv', got %r" % (fmt,))
    rows, seed = int(rows), int(seed)
    if rows < 0:
        raise ValueError('rows must be >= 0')
    if seed < 0:
        raise ValueError('seed must be >= 0')
    t0 = time.perf_counter()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path),
                               suffix='.tmp', dir=directory)
    # held until the rename: a later run removes such a file only when no
    # writer holds it (what a killed generation left; datafiles.py)
    lock = os.dup(fd)
    fcntl.flock(lock, fcntl.LOCK_EX)
    positives = 0
    pos_hist = np.zeros(_AUC_BINS, dtype=np.int64)
    neg_hist = np.zeros(_AUC_BINS, dtype=np.int64)
    try:
        with os.fdopen(fd, 'wb') as raw:
            if path.endswith('.gz'):
                out = gzip.GzipFile(filename='', mode='wb', fileobj=raw,
                                    compresslevel=_GZIP_LEVEL, mtime=0)
            else:
                out = raw
            # its line index, counted as it is written (modelzoo/line_index.py)
            indexed = IndexingWriter(out)
            try:
                for data, pos, ph, nh in _encoded_pieces(rows, seed, fmt,
                                                         chunk_rows, workers):
                    indexed.write(data)
                    positives += pos
                    pos_hist += ph
                    neg_hist += nh
            finally:
                if out is not raw:
                    out.close()
            raw.flush()
            os.fsync(raw.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        indexed.save(path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(lock)
    seconds = time.perf_counter() - t0
    return {
        'path': path, 'rows': rows, 'positives': positives,
        'ctr': positives / rows if rows else float('nan'),
        'hidden_auc': binned_auc(pos_hist, neg_hist),
        'seconds': seconds,
        'rows_per_second': rows / seconds if seconds > 0 else float('inf'),
        'bytes': os.path.getsize(path), 'fmt': fmt, 'seed': seed,
    }


def describe_criteo_file(path, max_rows=None):
    """Statistics of a Kaggle-format (tab) or DeepRec CSV file, real or not.

    Used to compare generated data with the real sample (see data/README.md):
    rows, CTR, per-column missing rates, distinct ids and top-id share per
    categorical column, and integer quantiles.  Reads at most max_rows rows.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith('.gz') else open
    labels, ints, cats = [], [], []
    with opener(path, 'rt', encoding='ascii', newline='\n') as f:
        for i, line in enumerate(f):
            if max_rows is not None and i >= max_rows:
                break
            line = line.rstrip('\n')
            fields = line.split('\t') if '\t' in line else line.split(',')
            if len(fields) != len(COLUMNS):
                raise ValueError('%s:%d: %d fields, expected %d'
                                 % (path, i + 1, len(fields), len(COLUMNS)))
            labels.append(int(fields[0]))
            ints.append(fields[1:1 + _NI])
            cats.append(fields[1 + _NI:])
    n = len(labels)
    out = {'rows': n, 'ctr': float(np.mean(labels)) if n else float('nan')}
    if not n:
        return out
    ints = np.array(ints, dtype=object)
    cats = np.array(cats, dtype=object)
    for j, c in enumerate(INT_COLUMNS):
        col = ints[:, j]
        present = np.array([v for v in col if v != ''], dtype=np.int64)
        out[c + '_missing'] = 1.0 - len(present) / n
        if len(present):
            q = np.percentile(present, [50, 90, 99])
            out[c + '_p50'], out[c + '_p90'], out[c + '_p99'] = (float(x) for x in q)
            out[c + '_zero'] = float(np.mean(present == 0))
            out[c + '_min'] = int(present.min())
            out[c + '_max'] = int(present.max())
    for k, c in enumerate(CAT_COLUMNS):
        col = [v for v in cats[:, k] if v != '']
        out[c + '_missing'] = 1.0 - len(col) / n
        values, counts = np.unique(np.array(col, dtype='U8'), return_counts=True) \
            if col else (np.array([]), np.array([0]))
        out[c + '_distinct'] = int(len(values))
        out[c + '_top_share'] = float(counts.max() / len(col)) if col else 0.0
        out[c + '_singletons'] = int(np.sum(counts == 1)) if col else 0
    return out
