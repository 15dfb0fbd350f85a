//! Domain values, parsed from untrusted input once ("parse, don't validate").
//!
//! A value of one of these types is valid by construction; the parsers return a
//! human-readable message that the routes gather into a 422 response. Each write
//! request is parsed into one struct of them, in one place (see `requests`).

mod article;
mod requests;
mod slug;
mod user;

pub use article::{ArticleBody, CommentBody, Description, TagList, Title};
pub use requests::{ArticleChanges, Credentials, NewArticle, NewComment, NewUser, UserChanges};
pub use slug::Slug;
pub use user::{Bio, CommonPasswords, Email, ImageUrl, Password, Username, username_skeleton};

/// Checks `input` is at most `max` characters long and not blank, and trims it.
///
/// The length is that of the input as sent, so that the `maxLength` published in
/// the OpenAPI document is exactly what is enforced.
fn bounded_text(input: &str, max: usize) -> Result<String, String> {
    if input.chars().count() > max {
        return Err(format!("is too long (maximum is {max} characters)"));
    }
    if input.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err("may not contain control characters".to_owned());
    }
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("can't be blank".to_owned());
    }
    Ok(trimmed.to_owned())
}

/// Declares a `String` newtype with `parse`, `as_str` and `into_inner`.
macro_rules! text_newtype {
    ($(#[$meta:meta])* $name:ident, max = $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn parse(input: &str) -> Result<Self, String> {
                super::bounded_text(input, Self::MAX_CHARS).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }
    };
}
use text_newtype;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_trims_and_rejects_blank_or_long_input() {
        assert_eq!(bounded_text("  hi ", 5), Ok("hi".to_owned()));
        assert_eq!(bounded_text("   ", 5), Err("can't be blank".to_owned()));
        assert!(bounded_text("abcdef", 5).is_err());
        assert_eq!(bounded_text("ééééé", 5), Ok("ééééé".to_owned()), "counts characters, not bytes");
        assert!(bounded_text("a\0b", 5).is_err(), "NUL can't be stored in PostgreSQL text");
        assert_eq!(bounded_text("a\nb", 5), Ok("a\nb".to_owned()), "line breaks are text");
    }
}
