//! The one error type of manifest loading, and the bookkeeping that turns
//! byte spans (what `toml` reports) into line/column positions (what people read).

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem with a manifest, pinned to a position in it when one is known.
///
/// `Display` renders a single line, `file:line:column: message` (or `file: message`
/// when there is no position, e.g. the file could not be read), which is the
/// format editors and terminals recognise as a jump target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ManifestError {
    /// The manifest file, as it was named by the caller.
    pub file: PathBuf,
    /// 1-based line of the offending text, if known.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending text, if known.
    pub column: Option<usize>,
    /// What is wrong: names the field and what was expected.
    pub message: String,
}

impl ManifestError {
    /// An error that applies to the file as a whole (no position).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        // Messages from serde can span lines in rare cases; keep Display to one line.
        let message = self.message.replace('\n', " ");
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                format!("{}:{line}:{column}: {message}", self.file.display())
            }
            (Some(line), None) => format!("{}:{line}: {message}", self.file.display()),
            _ => format!("{}: {message}", self.file.display()),
        }
    }
}

/// The manifest being read: its name (for messages) and text (for positions).
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error located at the start of `span` (a byte range into the text).
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ManifestError {
        let (line, column) = line_column(self.text, span.start);
        ManifestError {
            file: self.file.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// 1-based line of a byte offset, to point at a related earlier definition.
    pub fn line(&self, offset: usize) -> usize {
        line_column(self.text, offset).0
    }

    /// Converts a `toml` parse or deserialisation error, keeping serde's message
    /// (it names the field and the expected type) and the position of its span.
    pub fn toml_error(&self, err: &toml::de::Error) -> ManifestError {
        let message = err.message().trim_end().to_string();
        match err.span() {
            Some(span) => self.error(span, message),
            None => ManifestError::whole_file(self.file, message),
        }
    }
}

/// 1-based (line, column) of a byte offset; columns count characters, not bytes,
/// so that multi-byte text before the error does not push the caret to the right.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one_and_in_chars() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_column(text, 6 + 6), (2, 6));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn display_is_one_line_with_or_without_position() {
        let mut err = ManifestError::whole_file(Path::new("app/spin.toml"), "not found");
        assert_eq!(err.to_string(), "app/spin.toml: not found");
        err.line = Some(3);
        err.column = Some(7);
        err.message = "bad\nthing".into();
        assert_eq!(err.to_string(), "app/spin.toml:3:7: bad thing");
    }
}
