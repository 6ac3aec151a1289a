#!/usr/bin/env python3
"""Held-out APGR of the score-model variants tried for issue 12 (bench/RESULTS.md,
"Router complexity score", third pass). Exploration only: the shipped weights come from
`core/examples/fit_router.rs`; this script re-implements its fit (logistic regression on
standardized features, L2 0.3 per row, prompts weighted by (prompts of their subject)^-0.5,
option features absent without options) in numpy to try models the Rust script does not
have, on the same folds (FNV-1a of the subject mod 5) and the same APGR.

    cargo run --release -p gatekeeper --example fit_router -- --dump /tmp/rows.jsonl
    python3 bench/apgr/variants.py /tmp/rows.jsonl [--chat /tmp/chat-rows.jsonl] [--slow]

Needs numpy. Deterministic except the ranking-loss rows (fixed seeds, printed). `--chat`
takes a dump of other prompts (e.g. the routing regression table written as labelled
examples) and prints their complexity under the main variants; `--slow` adds the nested
greedy search (a few minutes).
"""
import itertools, json, re, sys
import numpy as np

args = sys.argv[1:]
rows = [json.loads(l) for l in open(args[0])]
DATA = 'core/data/routing/routing-dev.jsonl'
prompts = [json.loads(l)['prompt'] for l in open(DATA)]
X = np.array([r['features'][:12] for r in rows])  # the 12 features before this pass
subj = np.array([r['subject'] for r in rows])
weak = np.array([r['weak'] for r in rows], float)
strong = np.array([r['strong'] for r in rows], float)
gain = (strong - weak + 1) / 2
N = len(rows)
OPT = {1, 2, 3}  # log_options, numeric_option_share, compound_option_share


def fnv(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h % 5


fold = np.array([fnv(s) for s in subj])


def apgr(sc, w, s):
    n = len(sc)
    order = sorted(range(n), key=lambda i: (-sc[i], i))
    g = np.concatenate([[0], np.cumsum((s - w)[order])])
    d = s.mean() - w.mean()
    pgr = lambda k: (g[min(int(round(k / 100 * n)), n)] / n) / d
    return sum((pgr(k) + pgr(k + 1)) / 2 / 100 for k in range(100))


def subject_w(sub, power=0.5):
    _, inv, c = np.unique(sub, return_inverse=True, return_counts=True)
    w = c[inv].astype(float) ** -power
    return w * len(w) / w.sum()


def absent(cols):
    """Mask: column j is absent for prompts without options when j is in `cols`."""
    def am(Z):
        m = np.zeros(Z.shape, bool)
        no = Z[:, 1] <= 0
        for j in cols:
            m[:, j] = no
        return m
    return am


AM0 = absent([1, 2, 3])


def fit_logit(Xt, y, sw, l2=0.3, am=AM0):
    n, d = Xt.shape
    mu, sd = Xt.mean(0), Xt.std(0)
    sd[sd < 1e-6] = 1
    Z = (Xt - mu) / sd
    Z[am(Xt)] = 0
    Z = np.hstack([np.ones((n, 1)), Z])
    w, lam = np.zeros(d + 1), l2 * n
    for _ in range(50):
        p = 1 / (1 + np.exp(-Z @ w))
        g = Z.T @ (sw * (p - y))
        g[1:] += lam * w[1:]
        H = (Z * (sw * p * (1 - p))[:, None]).T @ Z
        H[np.arange(1, d + 1), np.arange(1, d + 1)] += lam
        step = np.linalg.solve(H, g)
        w -= step
        if abs(step).max() < 1e-9:
            break

    def pred(Xn):
        Zn = (Xn - mu) / sd
        Zn[am(Xn)] = 0
        return w[0] + Zn @ w[1:]
    return pred


def fit_stumps(Xt, y, sw, am, nt, init=None, feats=None, lr=0.1, leaf=200, bins=64):
    """Boosted stumps (logistic loss, Newton leaf values), each centred over the rows where
    its feature is present so an absent feature adds 0; from 0 (a GAM) or from `init`."""
    n, d = Xt.shape
    A = am(Xt)
    prep = []
    for j in range(d):
        if feats is not None and j not in feats:
            prep.append(None)
            continue
        pres = np.where(~A[:, j])[0]
        o = pres[np.argsort(Xt[pres, j], kind='stable')]
        xs = Xt[o, j]
        cand = np.unique(np.quantile(xs, np.linspace(0, 1, bins + 1)[1:-1]))
        idx = np.searchsorted(xs, cand, side='right')
        ok = (idx >= leaf) & (len(o) - idx >= leaf)
        prep.append((o, cand[ok], idx[ok]))
    if init is None:
        b = np.average(y, weights=sw)
        base = lambda Z: np.full(len(Z), np.log(b / (1 - b)))
    else:
        base = init
    F = base(Xt).copy()
    stumps = []
    for _ in range(nt):
        p = 1 / (1 + np.exp(-F))
        g, h = sw * (y - p), sw * p * (1 - p)
        best = None
        for j, pr in enumerate(prep):
            if pr is None or len(pr[1]) == 0:
                continue
            o, cand, idx = pr
            gs, hs = np.cumsum(g[o]), np.cumsum(h[o])
            gl, hl = gs[idx - 1], hs[idx - 1]
            gr, hr = gs[-1] - gl, hs[-1] - hl
            # Gain over not splitting this feature's present rows (their sums differ by feature).
            sc = gl * gl / hl + gr * gr / hr - gs[-1] ** 2 / hs[-1]
            k = np.argmax(sc)
            if best is None or sc[k] > best[0]:
                best = (sc[k], j, cand[k], gl[k] / hl[k], gr[k] / hr[k], hl[k], hr[k])
        if best is None:
            break
        _, j, th, vl, vr, hl, hr = best
        c = (vl * hl + vr * hr) / (hl + hr)
        vl, vr = lr * (vl - c), lr * (vr - c)
        stumps.append((j, th, vl, vr))
        o = prep[j][0]
        F[o] += np.where(Xt[o, j] <= th, vl, vr)

    def pred(Xn):
        out = base(Xn).copy()
        mm = am(Xn)
        for j, th, a, b in stumps:
            out += np.where(mm[:, j], 0, np.where(Xn[:, j] <= th, a, b))
        return out
    return pred


def aug(Z, pairs):
    return np.hstack([Z] + [(Z[:, a] * Z[:, b])[:, None] for a, b in pairs])


def am_pairs(pairs):
    return absent([1, 2, 3] + [12 + i for i, (a, b) in enumerate(pairs) if a in OPT or b in OPT])


def run_cv(Xa, fit, rows=None):
    rows = np.arange(N) if rows is None else rows
    fr = fold[rows]
    ho, fa = np.zeros(len(rows)), []
    for k in sorted(set(fr)):
        tr, te = rows[fr != k], fr == k
        ho[te] = fit(Xa[tr], gain[tr], subject_w(subj[tr]))(Xa[rows[te]])
        fa.append(apgr(ho[te], weak[rows[te]], strong[rows[te]]))
    return np.mean(fa), apgr(ho, weak[rows], strong[rows]), fa


def report(name, r):
    m, p, fa = r
    print(f'| {name} | ' + ' | '.join(f'{a:.3f}' for a in fa) + f' | {m:.3f} | {p:.3f} |', flush=True)


def nested(configs, make, crit='mean'):
    """Outer fold k: choose the config by leave-one-fold-out CV on the other four folds
    (criterion: their mean of folds, pooled, or the average of the two), refit on them
    with it, score fold k."""
    ho, fa, chosen = np.zeros(N), [], []
    for k in range(5):
        otr = np.where(fold != k)[0]
        best = None
        for cfg in configs:
            Xa, fit = make(cfg)
            m, p, _ = run_cv(Xa, fit, rows=otr)
            c = {'mean': m, 'pooled': p, 'avg': (m + p) / 2}[crit]
            if best is None or c > best[0]:
                best = (c, cfg)
        chosen.append(best[1])
        Xa, fit = make(best[1])
        te = fold == k
        ho[te] = fit(Xa[~te], gain[~te], subject_w(subj[~te]))(Xa[te])
        fa.append(apgr(ho[te], weak[te], strong[te]))
    return np.mean(fa), apgr(ho, weak, strong), fa, chosen


AM_NUM = absent([1, 2, 3, 5])  # stumps on log_numbers too only where there are options
PAIRS = [(0, 1), (0, 5), (1, 5), (0, 2), (0, 3), (0, 8), (0, 9), (5, 2)]
SHIPPED = [(5, 2), (0, 2)]


def lin_pairs(ps):
    am = am_pairs(list(ps))
    return aug(X, list(ps)), lambda a, b, c: fit_logit(a, b, c, am=am)


def hybrid(nt, am_stumps=AM0, feats=None, ps=()):
    ps = list(ps)
    am_lin = am_pairs(ps)
    am_st = (lambda Z: np.hstack([am_stumps(Z[:, :12]), am_lin(Z)[:, 12:]])) if ps else am_stumps

    def fit(a, b, c):
        return fit_stumps(a, b, c, am_st, nt, init=fit_logit(a, b, c, am=am_lin), feats=feats)
    return aug(X, ps), fit


def main():
    print('| variant | fold 0 | 1 | 2 | 3 | 4 | mean of folds | pooled |')
    print('|---|--:|--:|--:|--:|--:|--:|--:|')
    report('linear, 12 features (before)', run_cv(X, fit_logit))
    report('linear + both products (shipped)', run_cv(*lin_pairs(SHIPPED)))
    for p in PAIRS:
        report(f'linear + x{p[0]}·x{p[1]}', run_cv(*lin_pairs([p])))
    for crit in ['mean', 'pooled', 'avg']:
        m, p, fa, ch = nested([()] + [(q,) for q in PAIRS] + [tuple(SHIPPED)], lin_pairs, crit)
        report(f'nested: product set chosen by inner CV ({crit}); chose {ch}', (m, p, fa))
    for l2 in [0.1, 0.3, 1.0]:
        for pw in [0.3, 0.5, 0.7]:
            am = am_pairs(SHIPPED)
            def fit(a, b, c, l2=l2, pw=pw):
                w = c ** (pw / 0.5)  # c is (subject size)^-0.5 rescaled; rescale again to mean 1
                return fit_logit(a, b, w * len(w) / w.sum(), l2, am=am)
            report(f'shipped features, L2 {l2}, subject power {pw}', run_cv(aug(X, SHIPPED), fit))
    for nt in [30, 50, 75, 100, 200]:
        report(f'GAM: {nt} boosted stumps, 12 features', run_cv(X, lambda a, b, c, nt=nt: fit_stumps(a, b, c, AM0, nt)))
    for nt in [75, 100]:
        am = am_pairs(SHIPPED)
        report(f'GAM: {nt} stumps + both products', run_cv(aug(X, SHIPPED), lambda a, b, c, nt=nt: fit_stumps(a, b, c, am, nt)))
    for nt in [20, 50, 100]:
        report(f'linear + {nt} stumps on its residual', run_cv(*hybrid(nt)))
        report(f'linear + {nt} stumps, none on length', run_cv(*hybrid(nt, feats=set(range(1, 12)))))
        report(f'linear + {nt} stumps, none on length, numbers only with options',
               run_cv(*hybrid(nt, AM_NUM, set(range(1, 12)))))
        report(f'shipped + {nt} stumps, numbers only with options',
               run_cv(*hybrid(nt, AM_NUM, set(range(1, 14)), SHIPPED)))
    for crit in ['mean', 'pooled', 'avg']:
        m, p, fa, ch = nested([0, 20, 50, 100], lambda nt: hybrid(nt, AM_NUM, set(range(1, 12))), crit)
        report(f'nested: stumps count (numbers only with options) by inner CV ({crit}); chose {ch}', (m, p, fa))
    for nt in [50, 75, 100, 150]:
        report(f'two models: {nt} stumps on the 14 features for prompts with options, the shipped linear one without',
               run_cv(*two_models(nt)))
    for crit in ['mean', 'pooled']:
        m, p, fa, ch = nested([50, 75, 100, 150], two_models, crit)
        report(f'nested: two models, stumps count by inner CV ({crit}); chose {ch}', (m, p, fa))
    for sub in [0.1, 0.3, 1.0]:
        for seed in [1, 2]:
            rng = np.random.default_rng(seed)
            report(f'pairwise ranking loss, shipped features, L2 {sub}, seed {seed}',
                   run_cv(aug(X, SHIPPED), lambda a, b, c, l2=sub, rng=rng: fit_rank(a, b, c, am_pairs(SHIPPED), l2, rng)))
    XE, names, optdep = extra_features()
    for i, nm in enumerate(names):
        cols = [1, 2, 3] + ([12] if nm in optdep else [])
        am = absent(cols)
        report(f'linear + {nm}', run_cv(np.hstack([X, XE[:, i:i + 1]]), lambda a, b, c, am=am: fit_logit(a, b, c, am=am)))
    if '--slow' in args:
        greedy_nested(XE, names, optdep)
    if '--chat' in args:
        chat(args[args.index('--chat') + 1])


def two_models(nt):
    """Boosted stumps (fitted on every training prompt) score prompts with answer options;
    the shipped linear model scores the rest, so chat keeps the linear model's score."""
    am = am_pairs(SHIPPED)

    def fit(a, b, c):
        lin = fit_logit(a, b, c, am=am)
        gam = fit_stumps(a, b, c, am, nt)
        return lambda Z: np.where(Z[:, 1] > 0, gam(Z), lin(Z))
    return aug(X, SHIPPED), fit


def fit_rank(Xt, y, sw, am, l2, rng, npairs=200_000):
    """Linear model on a pairwise logistic (RankNet) loss over random training pairs of
    different gain, drawn with the subject weights."""
    mu, sd = Xt.mean(0), Xt.std(0)
    sd[sd < 1e-6] = 1
    Z = (Xt - mu) / sd
    Z[am(Xt)] = 0
    p = sw / sw.sum()
    i, j = rng.choice(len(y), npairs, p=p), rng.choice(len(y), npairs, p=p)
    keep = y[i] != y[j]
    i, j = i[keep], j[keep]
    D = np.vstack([Z[i] - Z[j], Z[j] - Z[i]])
    lab = np.concatenate([(y[i] > y[j]).astype(float), (y[j] > y[i]).astype(float)])
    w, lam = np.zeros(D.shape[1]), l2 * len(D)
    for _ in range(30):
        q = 1 / (1 + np.exp(-D @ w))
        step = np.linalg.solve((D * (q * (1 - q))[:, None]).T @ D + lam * np.eye(len(w)), D.T @ (q - lab) + lam * w)
        w -= step
        if abs(step).max() < 1e-9:
            break

    def pred(Xn):
        Zn = (Xn - mu) / sd
        Zn[am(Xn)] = 0
        return Zn @ w
    return pred


def extra_features():
    """Candidate features with a prior reason, computed with regular expressions (none is
    in the Rust scan)."""
    def one(p):
        opt = [l[2:].strip() for l in p.split('\n') if re.match(r'^[A-H][.)]', l)]
        qi = re.search(r'\n[A-H][.)]', p)
        q = p[:qi.start()] if qi else p
        ol = [len(o) for o in opt]
        sent = len(re.findall(r'[.?!](\s|$)', q))
        return {
            'log question bytes': np.log1p(len(q)),
            'log mean option bytes': np.log1p(np.mean(ol)) if ol else 0,
            'option length spread': np.std(ol) / max(np.mean(ol), 1) if ol else 0,
            'question ÷ options length': np.log1p(len(q)) - np.log1p(sum(ol)) if ol else 0,
            '"which of the following"': float(bool(re.search(r'which of the following', p, re.I))),
            'a blank ___': float('___' in p),
            '"none/all/both of the above"': float(bool(re.search(r'(none|all|both) of the (above|these)', p, re.I))),
            'LaTeX': float(bool(re.search(r'\\\\|\$', p))),
            'log sentences in the question': np.log1p(sent),
            'a quotation': float('"' in q),
            '"you"': np.log1p(len(re.findall(r'\byou\b', p, re.I))),
            '"best/most/least/primarily/main"': float(bool(re.search(r'\b(best|most likely|most|least|primarily|main)\b', q, re.I))),
            'asks to compute': float(bool(re.search(r'\b(calculate|compute|how many|how much|what is the value)\b', q, re.I))),
            'log words in capitals': np.log1p(len(re.findall(r'\b[A-Z]{2,}\b', q))),
            'capital share': sum(c.isupper() for c in q) / max(len(q), 1),
            'words per sentence': len(q.split()) / max(1, sent),
            'long-word share': np.mean([len(w) >= 9 for w in re.findall(r'[A-Za-z]+', q)] or [0]),
        }
    E = [one(p) for p in prompts]
    names = list(E[0])
    optdep = {'log mean option bytes', 'option length spread', 'question ÷ options length'}
    return np.array([[e[k] for k in names] for e in E]), names, optdep


def greedy_nested(XE, names, optdep, steps=4):
    """Forward selection of up to 4 columns among every product of two of the 12 features
    and the extra features, chosen by inner CV (average of mean and pooled) in each outer
    fold."""
    cand, cols, isopt = [], [], []
    for a, b in itertools.combinations_with_replacement(range(12), 2):
        cand.append(f'x{a}·x{b}')
        cols.append(X[:, a] * X[:, b])
        isopt.append(a in OPT or b in OPT)
    for i, nm in enumerate(names):
        cand.append(nm)
        cols.append(XE[:, i])
        isopt.append(nm in optdep)
    C = np.array(cols).T

    def build(sel):
        return np.hstack([X, C[:, sel]]), absent([1, 2, 3] + [12 + i for i, s in enumerate(sel) if isopt[s]])

    def score(sel, rows):
        Xa, am = build(sel)
        m, p, _ = run_cv(Xa, lambda a, b, c: fit_logit(a, b, c, am=am), rows)
        return (m + p) / 2

    hos, fas = {s: np.zeros(N) for s in range(steps + 1)}, {s: [] for s in range(steps + 1)}
    for k in range(5):
        otr = np.where(fold != k)[0]
        sel = []
        for _ in range(steps):
            sel.append(max((j for j in range(len(cand)) if j not in sel), key=lambda j: score(sel + [j], otr)))
        print(f'fold {k} chose', [cand[j] for j in sel], flush=True)
        te = fold == k
        for s in range(steps + 1):
            Xa, am = build(sel[:s])
            hos[s][te] = fit_logit(Xa[~te], gain[~te], subject_w(subj[~te]), am=am)(Xa[te])
            fas[s].append(apgr(hos[s][te], weak[te], strong[te]))
    for s in range(1, steps + 1):
        report(f'nested greedy forward selection, {s} columns', (np.mean(fas[s]), apgr(hos[s], weak, strong), fas[s]))


def chat(path):
    R = [json.loads(l) for l in open(path)]
    XR = np.array([r['features'][:12] for r in R])
    sw = subject_w(subj)

    def pct(f, Xtrain, Xn):
        q = np.quantile(f(Xtrain), np.linspace(0, 1, 101))
        return np.interp(f(Xn), q, np.linspace(0, 1, 101))
    variants = {
        'before': (X, XR, fit_logit(X, gain, sw)),
        'shipped': (aug(X, SHIPPED), aug(XR, SHIPPED), lin_pairs(SHIPPED)[1](aug(X, SHIPPED), gain, sw)),
        'GAM100+products': (aug(X, SHIPPED), aug(XR, SHIPPED), fit_stumps(aug(X, SHIPPED), gain, sw, am_pairs(SHIPPED), 100)),
        'lin+50 stumps no length': (X, XR, hybrid(50, feats=set(range(1, 12)))[1](X, gain, sw)),
        'same, numbers w/ options': (X, XR, hybrid(50, AM_NUM, set(range(1, 12)))[1](X, gain, sw)),
    }
    print('| prompt | ' + ' | '.join(variants) + ' |')
    out = {k: pct(f, a, b) for k, (a, b, f) in variants.items()}
    for i, r in enumerate(R):
        print(f"| {r['subject']} | " + ' | '.join(f'{out[k][i]:.2f}' for k in variants) + ' |')


if __name__ == '__main__':
    main()
