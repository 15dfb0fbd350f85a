//! Article and comment fields.

use super::text_newtype;

text_newtype!(
    /// An article title.
    Title,
    max = 200
);
text_newtype!(
    /// An article's one-line description.
    Description,
    max = 1_000
);
text_newtype!(
    /// An article's Markdown body.
    ArticleBody,
    max = 100_000
);
text_newtype!(
    /// A comment's text.
    CommentBody,
    max = 10_000
);

/// An article's tags: trimmed, de-duplicated and sorted alphabetically (the order
/// the API returns them in), at most 20, each 1 to 40 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagList(Vec<String>);

impl TagList {
    pub const MAX_TAGS: usize = 20;
    pub const MAX_CHARS: usize = 40;

    pub fn parse(input: &[String]) -> Result<Self, String> {
        if input.len() > Self::MAX_TAGS {
            return Err(format!("is too long (maximum is {} tags)", Self::MAX_TAGS));
        }
        let mut tags = Vec::with_capacity(input.len());
        for raw in input {
            if raw.chars().count() > Self::MAX_CHARS {
                return Err(format!("tags are at most {} characters long", Self::MAX_CHARS));
            }
            let tag = raw.trim();
            if tag.is_empty() {
                return Err("tags can't be blank".to_owned());
            }
            if tag.chars().any(char::is_control) {
                return Err("tags can't contain control characters".to_owned());
            }
            tags.push(tag.to_owned());
        }
        tags.sort_unstable();
        tags.dedup();
        Ok(Self(tags))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_sorted() {
        let tags = TagList::parse(&strings(&["training", " dragons", "training"])).expect("valid");
        assert_eq!(tags.as_slice(), ["dragons", "training"]);
    }

    #[test]
    fn blank_long_or_too_many_tags_are_rejected() {
        assert!(TagList::parse(&strings(&[" "])).is_err());
        assert!(TagList::parse(&[("t".repeat(41))]).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("tag{i}")).collect();
        assert!(TagList::parse(&many).is_err());
    }

    #[test]
    fn titles_are_trimmed_and_capped() {
        assert_eq!(Title::parse(" Dragons ").map(Title::into_inner), Ok("Dragons".to_owned()));
        assert!(Title::parse(&"t".repeat(201)).is_err());
        assert!(CommentBody::parse("").is_err());
    }
}
