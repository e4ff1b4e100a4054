//! Text that crosses a limit: cut on a character boundary, marked as cut.

/// Cut `text` to at most `max` bytes (on a character boundary) and mark it
/// with ` [cut]`; text within `max` is left as it is.
pub fn cut_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(" [cut]");
}

#[cfg(test)]
mod tests {
    use super::cut_text;

    #[test]
    fn cuts_on_a_character_boundary_and_says_so() {
        let mut s = "héllo".to_string();
        cut_text(&mut s, 2);
        assert_eq!(s, "h [cut]");
        let mut s = "short".to_string();
        cut_text(&mut s, 5);
        assert_eq!(s, "short");
    }
}
