//! A 2-D picture of Vivaldi coordinates: the principal components of the members' vectors, so
//! the two directions along which the fleet spreads most become x and y. Pure and deterministic
//! (power iteration from a fixed start).

/// Points projected onto the first two principal components, in the coordinates' unit
/// (seconds), centred on the fleet's mean. Fewer than two points are placed at the origin.
pub fn pca_2d(points: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let n = points.len();
    let dim = points.iter().map(Vec::len).max().unwrap_or(0);
    if n < 2 || dim == 0 {
        return vec![(0.0, 0.0); n];
    }
    let mut mean = vec![0.0; dim];
    for p in points {
        for (m, v) in mean.iter_mut().zip(p) {
            *m += v / n as f64;
        }
    }
    let centred: Vec<Vec<f64>> = points
        .iter()
        .map(|p| {
            (0..dim)
                .map(|i| p.get(i).copied().unwrap_or(0.0) - mean[i])
                .collect()
        })
        .collect();
    let mut cov = vec![vec![0.0; dim]; dim];
    for p in &centred {
        for i in 0..dim {
            for j in 0..dim {
                cov[i][j] += p[i] * p[j];
            }
        }
    }
    let first = principal(&cov, None);
    let second = principal(&cov, Some(&first));
    centred
        .iter()
        .map(|p| (dot(p, &first), dot(p, &second)))
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The dominant eigenvector of a symmetric matrix, orthogonal to `not` if given.
fn principal(m: &[Vec<f64>], not: Option<&[f64]>) -> Vec<f64> {
    let dim = m.len();
    // a fixed, asymmetric start so no component starts at exactly zero
    let mut v: Vec<f64> = (0..dim).map(|i| 1.0 + i as f64 * 0.37).collect();
    for _ in 0..200 {
        if let Some(u) = not {
            let d = dot(&v, u);
            v.iter_mut().zip(u).for_each(|(x, y)| *x -= d * y);
        }
        let next: Vec<f64> = m.iter().map(|row| dot(row, &v)).collect();
        let norm = dot(&next, &next).sqrt();
        if norm < 1e-18 {
            break;
        }
        v = next.into_iter().map(|x| x / norm).collect();
    }
    if let Some(u) = not {
        let d = dot(&v, u);
        v.iter_mut().zip(u).for_each(|(x, y)| *x -= d * y);
    }
    let norm = dot(&v, &v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_stay_apart_and_distances_survive_on_a_plane() {
        // two clusters 100 ms apart along a diagonal of 8-D space, a little spread within each
        let mut pts = Vec::new();
        for (c, off) in [(0.0, 0.0), (0.1 / 8f64.sqrt(), 0.001)] {
            for k in 0..3 {
                pts.push(
                    (0..8)
                        .map(|i| c + off * (k as f64) * if i % 2 == 0 { 1.0 } else { -1.0 })
                        .collect(),
                );
            }
        }
        let xy = pca_2d(&pts);
        let d = |a: (f64, f64), b: (f64, f64)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
        let across = d(xy[0], xy[3]);
        assert!((across - 0.1).abs() < 0.005, "{across}");
        assert!(d(xy[0], xy[1]) < 0.01 && d(xy[3], xy[4]) < 0.01);
        assert_eq!(pca_2d(&pts[..1]), vec![(0.0, 0.0)]);
    }
}
