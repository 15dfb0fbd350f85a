//! What each write request asks for, once validated: the values a handler acts on.
//!
//! Each request DTO in `routes` converts into one of these with `TryFrom`, and
//! that conversion is the only place its fields are parsed; it gathers every
//! field's message into one `ValidationErrors`, the 422. The structs live here,
//! holding domain values (a login's two strings aside), so that a handler cannot
//! reach an unparsed field, and so that `domain` stays free of HTTP. The
//! conversions live beside the DTOs, in `routes`: the DTOs' fields and the JSON
//! names the messages are filed under (`tagList`) are the HTTP layer's business.

use super::{ArticleBody, Bio, CommentBody, Description, Email, ImageUrl, Password, TagList, Title, Username};

/// A registration.
#[derive(Debug)]
pub struct NewUser {
    pub username: Username,
    pub email: Email,
    pub password: Password,
}

/// A login, borrowed from the request. Neither field is a domain value: an
/// account is looked up by the email as given (trimmed), and the password must
/// match whatever the rules were when it was set.
pub struct Credentials<'a> {
    pub email: &'a str,
    pub password: &'a str,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("email", &self.email).field("password", &"<redacted>").finish()
    }
}

/// Changes to the caller's account; `None` leaves a field as it is. An empty
/// `bio` or `image` clears it.
#[derive(Debug)]
pub struct UserChanges {
    pub username: Option<Username>,
    pub email: Option<Email>,
    pub password: Option<Password>,
    pub bio: Option<Bio>,
    pub image: Option<ImageUrl>,
}

/// A new article.
#[derive(Debug)]
pub struct NewArticle {
    pub title: Title,
    pub description: Description,
    pub body: ArticleBody,
    pub tags: TagList,
}

/// Changes to an article; `None` leaves a field as it is, and `tags`, when
/// given, replaces them all.
#[derive(Debug)]
pub struct ArticleChanges {
    pub title: Option<Title>,
    pub description: Option<Description>,
    pub body: Option<ArticleBody>,
    pub tags: Option<TagList>,
}

/// A new comment.
#[derive(Debug)]
pub struct NewComment {
    pub body: CommentBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = Credentials { email: "jake@jake.jake", password: "correct horse" };
        let printed = format!("{credentials:?}");
        assert!(printed.contains("jake@jake.jake") && !printed.contains("horse"), "{printed}");
    }
}
