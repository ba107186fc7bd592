//! Length limits shared by the chat formats.

const ELLIPSIS: char = '…';

/// Shortens `text` to at most `max_chars` characters (Unicode scalar values, as Slack and Discord
/// count), ending it with `…` when anything was cut.
///
/// The cut always falls on a char boundary. `back_off` may shorten the kept part further, so that a
/// format's escape sequence (Slack's `&amp;`) is dropped whole rather than cut in half.
pub(super) fn truncate_chars(text: &str, max_chars: usize, back_off: fn(&str) -> &str) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let Some(kept_chars) = max_chars.checked_sub(1) else {
        return String::new();
    };
    // One char is left for the ellipsis; `nth` finds where the first char that does not fit starts.
    let cut = text
        .char_indices()
        .nth(kept_chars)
        .map_or(text.len(), |(index, _)| index);
    let kept = back_off(&text[..cut]).trim_end();
    format!("{kept}{ELLIPSIS}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_all(text: &str) -> &str {
        text
    }

    #[test]
    fn text_within_the_limit_is_unchanged() {
        assert_eq!(truncate_chars("héllo", 5, keep_all), "héllo");
        assert_eq!(truncate_chars("", 0, keep_all), "");
    }

    #[test]
    fn long_text_ends_with_an_ellipsis_within_the_limit() {
        assert_eq!(truncate_chars("abcdef", 4, keep_all), "abc…");
        assert_eq!(truncate_chars("abcdef", 1, keep_all), "…");
        assert_eq!(truncate_chars("abcdef", 0, keep_all), "");
        assert_eq!(truncate_chars("ab   cdef", 4, keep_all), "ab…");
    }

    #[test]
    fn multi_byte_text_is_cut_on_char_boundaries() {
        let thumbs = "👍🏽".repeat(10);
        let cut = truncate_chars(&thumbs, 5, keep_all);
        assert_eq!(cut.chars().count(), 5);
        assert_eq!(cut, "👍🏽👍🏽…");
        let combining = "e\u{301}".repeat(10);
        assert_eq!(truncate_chars(&combining, 4, keep_all).chars().count(), 4);
    }

    #[test]
    fn back_off_shortens_the_kept_part() {
        fn drop_trailing_x(text: &str) -> &str {
            text.trim_end_matches('x')
        }
        assert_eq!(truncate_chars("abxxxxx", 5, drop_trailing_x), "ab…");
    }
}
