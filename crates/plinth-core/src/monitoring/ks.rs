//! The two-sample Kolmogorov–Smirnov test's p-value, two-sided, as scipy's `ks_2samp` computes
//! it with its default method: exact for samples of at most [`EXACT_UP_TO`] values (the
//! probability that a lattice path stays inside the band the statistic draws), else from the
//! one-sample distribution of the statistic for `n = round(n1·n2 / (n1 + n2))` (scipy's
//! `kstwo`), whose tail is computed by the method that is accurate in each region: the
//! Durbin–Marsaglia–Tsang–Wang matrix power, Pomeranz's recursion, Pelz and Good's series, or
//! the Birnbaum–Tingey sum. Evidently reports this p-value as the drift score of its KS test.

/// The larger sample's size up to which the p-value is exact.
pub const EXACT_UP_TO: usize = 10_000;

/// Both samples, sorted ascending, without NaN: the p-value of the two-sided test.
pub fn p_value(a: &[f64], b: &[f64]) -> f64 {
    p_value_with(a.len(), b.len(), |gap| max_gap(a, b, gap))
}

/// The same test over two samples given as counts per value, on the same ascending values
/// (binned summaries of served traffic): `r[i]` and `c[i]` values of each sample at the `i`-th.
pub fn p_value_of_counts(r: &[u64], c: &[u64]) -> f64 {
    let (n1, n2) = (r.iter().sum::<u64>() as usize, c.iter().sum::<u64>() as usize);
    p_value_with(n1, n2, |gap| {
        let (mut c1, mut c2, mut best) = (0usize, 0usize, 0.0f64);
        for (a, b) in r.iter().zip(c) {
            c1 += *a as usize;
            c2 += *b as usize;
            best = best.max(gap(c1, c2));
        }
        best
    })
}

/// The p-value for samples of `n1` and `n2` values, given the largest gap between their
/// cumulative counts under any gap function (`max_gap(gap)`).
fn p_value_with(
    n1: usize,
    n2: usize,
    max_gap: impl Fn(&dyn Fn(usize, usize) -> f64) -> f64,
) -> f64 {
    if n1 == 0 || n2 == 0 {
        return f64::NAN;
    }
    let g = gcd(n1, n2);
    if n1.max(n2) <= EXACT_UP_TO {
        // The statistic on the lattice of both denominators: h = D · lcm(n1, n2), exactly.
        let (s1, s2) = ((n2 / g) as i64, (n1 / g) as i64);
        let h = max_gap(&|c1, c2| (c1 as i64 * s1 - c2 as i64 * s2).unsigned_abs() as f64) as usize;
        if h == 0 {
            return 1.0;
        }
        let p = if n1 == n2 { outside_square(n1, h) } else { outside_band(n1, n2, g, h) };
        if p.is_finite() && (0.0..=1.0).contains(&p) {
            return p;
        }
    }
    let d = max_gap(&|c1, c2| (c1 as f64 / n1 as f64 - c2 as f64 / n2 as f64).abs());
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = (m * n / (m + n)).round_ties_even() as usize;
    kstwo_sf(en, d).clamp(0.0, 1.0)
}

/// The largest `gap(c1, c2)` over every value of either sample, where `c1`, `c2` count the
/// values of each sample at or below it.
fn max_gap(a: &[f64], b: &[f64], gap: &dyn Fn(usize, usize) -> f64) -> f64 {
    let (mut i, mut j, mut best) = (0, 0, 0.0f64);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => unreachable!(),
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        best = best.max(gap(i, j));
    }
    best
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Equal sizes `n`: the probability that a path leaves the band `|i - j| < h`, by inclusion and
/// exclusion over the reflections.
fn outside_square(n: usize, h: usize) -> f64 {
    let mut p = 0.0;
    let mut k = (n / h) as i64;
    while k >= 0 {
        let kh = k as f64 * h as f64;
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n as f64 - kh - j as f64) * p1 / (n as f64 + kh + j as f64 + 1.0);
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// Unequal sizes: the probability that a path from (0,0) to (m,n) leaves the band, one row of
/// the lattice at a time (each cell the share of paths through it that stayed inside so far).
fn outside_band(n1: usize, n2: usize, g: usize, h: usize) -> f64 {
    let (m, n) = (n1.max(n2), n1.min(n2));
    let (mg, ng, h) = ((m / g) as f64, (n / g) as f64, h as f64);
    let mut a = vec![1.0f64; n + 2];
    let mut minj = 0usize;
    let mut maxj = ((h / mg).ceil() as usize).min(n + 1);
    a[..maxj].fill(0.0);
    let mut curlen = maxj;
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        let fi = i as f64;
        minj = (((ng * fi - h) / mg).floor() + 1.0).max(0.0).min(n as f64) as usize;
        maxj = (((ng * fi + h) / mg).ceil() as usize).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..maxj - minj {
            let j = (jj + minj) as f64;
            val = (a[jj + minj - lastminj] * fi + val * j) / (fi + j);
            a[jj] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            a[curlen..lastlen].fill(1.0);
        }
    }
    a[maxj - minj - 1]
}

const SCALE: f64 = 340282366920938463463374607431768211456.0; // 2^128
const UNSCALE: f64 = 1.0 / SCALE;

/// The survival function of the one-sample two-sided statistic for `n` values at `x`.
pub(crate) fn kstwo_sf(n: usize, x: f64) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    let nf = n as f64;
    if x <= 0.5 / nf {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = if n <= 140 {
            (1..=n).fold(1.0, |p, i| p * (i as f64 * (1.0 / nf) * (2.0 * t - 1.0)))
        } else {
            // Stirling's series for n! / n^n: B(2k) / (2k (2k - 1)), highest term first.
            const STIRLING: [f64; 8] = [
                -3617.0 / 122400.0,
                1.0 / 156.0,
                -691.0 / 360360.0,
                1.0 / 1188.0,
                -1.0 / 1680.0,
                1.0 / 1260.0,
                -1.0 / 360.0,
                1.0 / 12.0,
            ];
            let rn = 1.0 / nf;
            let y = rn / nf;
            let series = STIRLING.iter().fold(0.0, |acc, c| acc * y + c);
            (nf.ln() / 2.0 - nf
                + (2.0 * std::f64::consts::PI).ln() / 2.0
                + rn * series
                + nf * (2.0 * t - 1.0).ln())
            .exp()
        };
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        return (2.0 * (1.0 - x).powi(n as i32)).min(1.0);
    }
    if x >= 0.5 {
        return (2.0 * smirnov(n, x)).min(1.0);
    }
    let nx2 = t * x;
    if n <= 140 {
        if nx2 <= 0.754693 {
            return 1.0 - dmtw(n, x);
        }
        if nx2 <= 4.0 {
            return 1.0 - pomeranz(n, x);
        }
        return (2.0 * smirnov(n, x)).min(1.0);
    }
    if nx2 >= 370.0 {
        return 0.0;
    }
    if nx2 >= 2.2 {
        return (2.0 * smirnov(n, x)).clamp(0.0, 1.0);
    }
    let cdf = if n <= 100_000 && nf * x.powf(1.5) <= 1.4 { dmtw(n, x) } else { pelz_good(n, x) };
    (1.0 - cdf).clamp(0.0, 1.0)
}

/// The one-sided statistic's survival function (Birnbaum and Tingey's sum, in logs).
fn smirnov(n: usize, x: f64) -> f64 {
    let nf = n as f64;
    if n == 1 {
        return 1.0 - x;
    }
    if x <= 1.0 / nf {
        return 1.0 - x * (1.0 + x).powi(n as i32 - 1);
    }
    if -2.0 * nf * x * x < -745.1332191019412 {
        return 0.0;
    }
    if (nf * x).floor() >= nf - 1.0 {
        return (1.0 - x).powi(n as i32);
    }
    if n > 1_000_000 {
        return (-(6.0 * nf * x + 1.0).powi(2) / (18.0 * nf)).exp();
    }
    use super::special::ln_gamma;
    let ln_n_fact = ln_gamma(nf + 1.0);
    let mut sum = 0.0;
    for v in 0..=((nf * (1.0 - x)).floor() as usize) {
        let vf = v as f64;
        let rest = 1.0 - x - vf / nf;
        if rest <= 0.0 {
            continue;
        }
        let ln_term = ln_n_fact - ln_gamma(vf + 1.0) - ln_gamma(nf - vf + 1.0)
            + (vf - 1.0) * (x + vf / nf).ln()
            + (nf - vf) * rest.ln();
        sum += ln_term.exp();
    }
    (x * sum).clamp(0.0, 1.0)
}

/// Durbin's matrix method as Marsaglia, Tsang and Wang made it exact: the CDF at `d` is a
/// corner of `H^n`, scaled by `n!/n^n`; powers are kept in range by tracked exponents.
fn dmtw(n: usize, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut w = vec![0.0; m];
    let mut v = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] = (1.0 - h.powi(j as i32)) * fac;
    }
    v[m - 1] = (1.0 + (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32)) * fac;
    let mut hm = vec![0.0; m * m];
    for c in 1..m {
        for r in c - 1..m {
            hm[r * m + c] = w[r + 1 - c];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    let mut pwr = vec![0.0; m * m];
    for i in 0..m {
        pwr[i * m + i] = 1.0;
    }
    let (mut expnt, mut h_expnt) = (0i32, 0i32);
    let mut e = n;
    while e > 0 {
        if e % 2 == 1 {
            pwr = matmul(&pwr, &hm, m);
            expnt += h_expnt;
        }
        hm = matmul(&hm, &hm, m);
        h_expnt *= 2;
        if hm[(k - 1) * m + k - 1].abs() > SCALE {
            hm.iter_mut().for_each(|x| *x /= SCALE);
            h_expnt += 128;
        }
        e /= 2;
    }
    let mut p = pwr[(k - 1) * m + k - 1];
    for i in 1..=n {
        p = i as f64 * p / n as f64;
        if p.abs() < UNSCALE {
            p *= SCALE;
            expnt -= 128;
        }
    }
    ldexp(p, expnt).clamp(0.0, 1.0)
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for r in 0..m {
        for k in 0..m {
            let x = a[r * m + k];
            if x != 0.0 {
                for c in 0..m {
                    out[r * m + c] += x * b[k * m + c];
                }
            }
        }
    }
    out
}

fn ldexp(x: f64, e: i32) -> f64 {
    x * 2f64.powi(e)
}

/// The window of lattice columns Pomeranz's recursion keeps at step `i`.
fn pomeranz_window(i: usize, n: usize, ll: i64, cf: i64, rf: i64) -> (i64, i64) {
    let n = n as i64;
    let (j1, j2) = if i == 0 {
        (-ll - cf - 1, ll + cf - 1)
    } else {
        let (q, r) = ((i as i64 + 1) / 2, (i as i64 + 1) % 2);
        if r == 0 {
            if q == n + 1 {
                (n - ll - cf - 1, n + ll + cf - 1)
            } else {
                (q - 1 - ll - rf - 1, q + ll - 1 + cf - 1)
            }
        } else {
            (q - 1 - ll - 1, q + ll + rf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Pomeranz's recursion for the CDF at `x` (accurate where `n·x²` is moderate).
fn pomeranz(n: usize, x: f64) -> f64 {
    let t = n as f64 * x;
    let ll = t.floor();
    let f = t - ll;
    let g = f.min(1.0 - f);
    let (cf, rf) = (i64::from(f > 0.0), i64::from(f > 0.5));
    let ll = ll as i64;
    let len = 2 * (ll as usize + 1);
    let (mut gp, mut tg, mut om) = (vec![1.0; len], vec![1.0; len], vec![1.0; len]);
    let nf = n as f64;
    let (a, b, c) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..len {
        gp[m] = gp[m - 1] * a / m as f64;
        tg[m] = tg[m - 1] * b / m as f64;
        om[m] = om[m - 1] * c / m as f64;
    }
    let mut v0 = vec![0.0; len];
    let mut v1 = vec![0.0; len];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt = 0i32;
    let (mut j1, _) = pomeranz_window(0, n, ll, cf, rf);
    let mut j2;
    for i in 1..=2 * n + 1 {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|x| *x = 0.0);
        (j1, j2) = pomeranz_window(i, n, ll, cf, rf);
        let powers = if i == 1 || i == 2 * n + 1 {
            &gp
        } else if i % 2 == 1 {
            &tg
        } else {
            &om
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let seg = |r: i64| {
                let at = k1 - v0s + r;
                if (0..len as i64).contains(&at) { v0[at as usize] } else { 0.0 }
            };
            let cs = j1 - k1;
            let cl = j2 - j1 + 1;
            for r in 0..cl.max(0) {
                let idx = cs + r;
                let mut sum = 0.0;
                for s in (idx - ln2 + 1).max(0)..=idx.min(ln2 - 1) {
                    sum += seg(s) * powers[(idx - s) as usize];
                }
                v1[r as usize] = sum;
            }
            let mx = v1.iter().cloned().fold(0.0, f64::max);
            if mx > 0.0 && mx < UNSCALE {
                v1.iter_mut().for_each(|x| *x *= SCALE);
                expnt -= 128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = v1[(n as i64 - v1s) as usize];
    for m in 1..=n {
        if ans.abs() > SCALE {
            ans /= SCALE;
            expnt += 128;
        }
        ans *= m as f64;
    }
    ldexp(ans, expnt).clamp(0.0, 1.0)
}

/// Pelz and Good's asymptotic series for the CDF (four terms in `1/√n`).
fn pelz_good(n: usize, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let z = nf.sqrt() * x;
    let (z2, z3, z4, z6) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let ql = -PI * PI / 8.0 / z2;
    if ql < -708.0 {
        return 0.0;
    }
    let q = ql.exp();
    let (p2, p4, p6) = (PI * PI, PI.powi(4), PI.powi(6));
    let (k1a, k1b) = (-z2, p2 / 4.0);
    let (k2a, k2b, k2c) =
        (6.0 * z6 + 2.0 * z4, (2.0 * z4 - 5.0 * z2) * p2 / 4.0, p4 * (1.0 - 2.0 * z2) / 16.0);
    let k3d = p6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = p4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = p2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);
    let mut kk = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for k in (1..=maxk).rev() {
        let m = (2 * k - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qp = q.powi((8 * k) as i32);
        let co =
            [1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4, k3a + k3b * m2 + k3c * m4 + k3d * m6];
        for i in 0..4 {
            kk[i] = kk[i] * qp + co[i];
        }
    }
    let s2p = (2.0 * PI).sqrt();
    let den = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for i in 0..4 {
        kk[i] = kk[i] * q * s2p / den[i];
    }
    let q = (-p2 / 2.0 / z2).exp();
    let s3 = 3f64.sqrt() * z;
    let (mut k2e, mut k3e) = (0.0, 0.0);
    for k in (1..=maxk).rev() {
        let kf = k as f64;
        let qk = q.powf(kf * kf);
        k2e += kf * kf * qk;
        k3e += (s3 + PI * kf) * (s3 - PI * kf) * kf * kf * qk;
    }
    kk[2] += k2e * (p2 * s2p / (-36.0 * z3));
    kk[3] += k3e * (p2 * s2p / (216.0 * z6));
    (0..4).map(|i| kk[i] / nf.powf(i as f64 / 2.0)).sum()
}
