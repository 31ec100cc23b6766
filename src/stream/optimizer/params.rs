//! The optimizer's parameters and the splitting rule.

use std::time::Duration;

/// The stream optimizer's parameters (the Python server's `STREAM_OPTIMIZER_ENABLED`,
/// `STREAM_MIN_DELAY`, `STREAM_MAX_DELAY`, `STREAM_SHORT_TEXT_THRESHOLD`,
/// `STREAM_LONG_TEXT_THRESHOLD`, `STREAM_CHUNK_SIZE`, with the same defaults).
///
/// A text of `L` characters (Unicode scalar values) is re-emitted:
/// - `L ≥ long_text_threshold`: in pieces of `chunk_size` characters, `min_delay` apart;
/// - otherwise one character per event, `max_delay` apart when `L ≤ short_text_threshold`, and
///   in between `max − ln(L/short) / ln(long/short) · (max − min)` apart.
///
/// Out-of-range values are read sensibly rather than refused: the delays are swapped when
/// `min > max`, thresholds and chunk size are at least 1, `long` at least `short + 1`.
///
/// Delays are waited with tokio's timer, whose resolution is one millisecond: a computed
/// 18.54 ms is waited as 19 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OptimizerParams {
    /// Re-chunk streams (default `false`).
    pub enabled: bool,
    /// Delay between pieces of long texts (default 16 ms).
    pub min_delay: Duration,
    /// Delay between the characters of short texts (default 24 ms).
    pub max_delay: Duration,
    /// Up to this many characters a text is short (default 10).
    pub short_text_threshold: usize,
    /// From this many characters a text is long (default 50).
    pub long_text_threshold: usize,
    /// Characters per piece of a long text (default 5).
    pub chunk_size: usize,
}

impl Default for OptimizerParams {
    fn default() -> Self {
        OptimizerParams {
            enabled: false,
            min_delay: Duration::from_millis(16),
            max_delay: Duration::from_millis(24),
            short_text_threshold: 10,
            long_text_threshold: 50,
            chunk_size: 5,
        }
    }
}

impl OptimizerParams {
    /// The defaults, switched on.
    pub fn enabled() -> Self {
        OptimizerParams {
            enabled: true,
            ..Self::default()
        }
    }

    fn sane(&self) -> (Duration, Duration, usize, usize, usize) {
        let (min, max) = if self.min_delay <= self.max_delay {
            (self.min_delay, self.max_delay)
        } else {
            (self.max_delay, self.min_delay)
        };
        let short = self.short_text_threshold.max(1);
        let long = self.long_text_threshold.max(short + 1);
        (min, max, short, long, self.chunk_size.max(1))
    }

    /// The delay after each piece of a text of `chars` characters.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gemini_balance::stream::optimizer::OptimizerParams;
    ///
    /// let p = OptimizerParams::enabled();
    /// assert_eq!(p.delay_for(5), Duration::from_millis(24));
    /// assert_eq!(p.delay_for(80), Duration::from_millis(16));
    /// // 30 characters: 24 ms − ln(3)/ln(5) · 8 ms ≈ 18.54 ms
    /// assert_eq!(p.delay_for(30).as_micros(), 18539);
    /// ```
    pub fn delay_for(&self, chars: usize) -> Duration {
        let (min, max, short, long, _) = self.sane();
        if chars <= short {
            max
        } else if chars >= long {
            min
        } else {
            let ratio = (chars as f64 / short as f64).ln() / (long as f64 / short as f64).ln();
            max.saturating_sub((max - min).mul_f64(ratio.clamp(0.0, 1.0)))
        }
    }

    /// The pieces a text is re-emitted as, and the delay after each.
    ///
    /// ```
    /// use gemini_balance::stream::optimizer::OptimizerParams;
    ///
    /// let p = OptimizerParams::enabled();
    /// assert_eq!(p.split("héllo").0, ["h", "é", "l", "l", "o"]);
    /// let long = "a".repeat(52);
    /// let (pieces, _) = p.split(&long);
    /// assert_eq!(pieces.len(), 11);
    /// assert_eq!(pieces[10], "aa");
    /// ```
    pub fn split<'a>(&self, text: &'a str) -> (Vec<&'a str>, Duration) {
        let (_, _, _, long, chunk) = self.sane();
        let chars = text.chars().count();
        let per_piece = if chars >= long { chunk } else { 1 };
        let mut pieces = Vec::with_capacity(chars.div_ceil(per_piece));
        let mut start = 0;
        let mut count = 0;
        for (i, _) in text.char_indices() {
            if count == per_piece {
                pieces.push(&text[start..i]);
                start = i;
                count = 0;
            }
            count += 1;
        }
        if start < text.len() {
            pieces.push(&text[start..]);
        }
        (pieces, self.delay_for(chars))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_logarithmic_rule() {
        let p = OptimizerParams::enabled();
        for (chars, micros) in [
            (0, 24_000),
            (10, 24_000),
            (11, 23_526),
            (20, 20_554),
            (30, 18_539),
            (49, 16_100),
            (50, 16_000),
            (500, 16_000),
        ] {
            assert_eq!(p.delay_for(chars).as_micros(), micros, "{chars} chars");
        }
    }

    #[test]
    fn nonsense_parameters_do_not_panic() {
        let p = OptimizerParams {
            enabled: true,
            min_delay: Duration::from_millis(30),
            max_delay: Duration::from_millis(10),
            short_text_threshold: 0,
            long_text_threshold: 0,
            chunk_size: 0,
        };
        for chars in 0..5 {
            let d = p.delay_for(chars);
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(30));
        }
        assert_eq!(p.split("abc").0, ["a", "b", "c"]);
        assert!(p.split("").0.is_empty());
    }
}
