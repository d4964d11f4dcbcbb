//! Inter-region round-trip-time matrices.

use std::time::Duration;

/// Why a matrix was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatrixError {
    #[error(
        "rtt matrix is empty; expected a header `region,<code1>,…,<codeN>` and one row per region"
    )]
    Empty,
    #[error("rtt matrix header must start with `region`, found `{0}`")]
    Header(String),
    #[error("rtt matrix line {line}: {msg}")]
    Line { line: usize, msg: String },
    #[error("rtt matrix has {rows} rows for {cols} regions in its header; it must be square")]
    NotSquare { rows: usize, cols: usize },
}

/// A square RTT matrix between named regions, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    regions: Vec<String>,
    rtt_ms: Vec<f64>,
}

const BUILTIN: &str = include_str!("../data/wonderproxy_2020_regions.csv");

impl Matrix {
    /// The measured 20-region matrix shipped with Vantage (see `data/SOURCE.md`).
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("the built-in matrix is valid")
    }

    /// Parses the CSV format of `data/wonderproxy_2020_regions.csv`.
    pub fn parse(csv: &str) -> Result<Self, MatrixError> {
        let mut lines = csv
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or(MatrixError::Empty)?;
        let mut cols = header.split(',').map(str::trim);
        let first = cols.next().unwrap_or_default();
        if first != "region" {
            return Err(MatrixError::Header(first.to_owned()));
        }
        let regions: Vec<String> = cols.map(str::to_owned).collect();
        if regions.is_empty() {
            return Err(MatrixError::Empty);
        }
        let n = regions.len();
        let mut rtt_ms = Vec::with_capacity(n * n);
        let mut rows = 0;
        for (i, line) in lines {
            let line_no = i + 1;
            let mut cells = line.split(',').map(str::trim);
            let name = cells.next().unwrap_or_default();
            if rows >= n {
                return Err(MatrixError::NotSquare {
                    rows: rows + 1,
                    cols: n,
                });
            }
            if name != regions[rows] {
                return Err(MatrixError::Line {
                    line: line_no,
                    msg: format!("row `{name}` is out of order; expected `{}`", regions[rows]),
                });
            }
            let mut count = 0;
            for cell in cells {
                let v: f64 = cell.parse().map_err(|_| MatrixError::Line {
                    line: line_no,
                    msg: format!("`{cell}` is not a number of milliseconds"),
                })?;
                if !v.is_finite() || v < 0.0 {
                    return Err(MatrixError::Line {
                        line: line_no,
                        msg: format!("rtt {v} must be finite and ≥ 0"),
                    });
                }
                rtt_ms.push(v);
                count += 1;
            }
            if count != n {
                return Err(MatrixError::Line {
                    line: line_no,
                    msg: format!("{count} values for {n} regions"),
                });
            }
            rows += 1;
        }
        if rows != n {
            return Err(MatrixError::NotSquare { rows, cols: n });
        }
        Ok(Self { regions, rtt_ms })
    }

    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    pub fn index(&self, region: &str) -> Option<usize> {
        self.regions.iter().position(|r| r == region)
    }

    /// The round-trip time from `a` to `b`, if both are known.
    pub fn rtt(&self, a: &str, b: &str) -> Option<Duration> {
        let (i, j) = (self.index(a)?, self.index(b)?);
        Some(self.rtt_at(i, j))
    }

    pub fn rtt_at(&self, i: usize, j: usize) -> Duration {
        Duration::from_secs_f64(self.rtt_ms[i * self.regions.len() + j] / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_twenty_regions_and_known_values() {
        let m = Matrix::builtin();
        assert_eq!(m.regions().len(), 20);
        assert_eq!(m.rtt("sin", "sin"), Some(Duration::ZERO));
        let sin_ams = m.rtt("sin", "ams").unwrap();
        assert_eq!(m.rtt("ams", "sin"), Some(sin_ams));
        assert!(sin_ams > Duration::from_millis(100) && sin_ams < Duration::from_millis(400));
        assert_eq!(m.rtt("sin", "xyz"), None);
    }

    #[test]
    fn rejects_malformed_matrices() {
        assert_eq!(Matrix::parse(""), Err(MatrixError::Empty));
        assert_eq!(
            Matrix::parse("from,a\na,0"),
            Err(MatrixError::Header("from".into()))
        );
        assert_eq!(
            Matrix::parse("region,a,b\na,0,1"),
            Err(MatrixError::NotSquare { rows: 1, cols: 2 })
        );
        let e = Matrix::parse("region,a,b\na,0,x\nb,1,0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rtt matrix line 2: `x` is not a number of milliseconds"
        );
        let e = Matrix::parse("region,a,b\nb,0,1\na,1,0").unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
        let e = Matrix::parse("region,a,b\na,0,-1\nb,1,0").unwrap_err();
        assert!(e.to_string().contains("≥ 0"), "{e}");
        let m = Matrix::parse("region,a,b\na,0,10.5\nb,10.5,0\n").unwrap();
        assert_eq!(m.rtt("a", "b"), Some(Duration::from_micros(10_500)));
    }
}
