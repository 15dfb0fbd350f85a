//! URL slugs for articles.
//!
//! A slug is the title lower-cased, with every run of characters other than letters
//! and digits turned into one `-`, cut to 80 characters. When that slug is taken, or
//! reserved (`feed` would be shadowed by `GET /api/articles/feed`), a random suffix
//! makes it unique: see `docs/api-decisions.md`.

/// Slugs that would collide with fixed routes under `/api/articles/`.
const RESERVED: &[&str] = &["feed"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub const MAX_BASE_CHARS: usize = 80;

    /// The readable slug of a title; never empty.
    pub fn from_title(title: &str) -> Self {
        let mut slug = String::with_capacity(title.len());
        let mut pending_dash = false;
        let mut count = 0;
        for c in title.chars() {
            if c.is_alphanumeric() {
                if pending_dash && !slug.is_empty() {
                    slug.push('-');
                    count += 1;
                }
                pending_dash = false;
                for lower in c.to_lowercase() {
                    slug.push(lower);
                    count += 1;
                }
                if count >= Self::MAX_BASE_CHARS {
                    break;
                }
            } else {
                pending_dash = true;
            }
        }
        if slug.is_empty() {
            slug.push_str("article");
        }
        Self(slug)
    }

    /// The same slug with a random suffix, for when the plain one is taken.
    pub fn with_random_suffix(&self) -> Self {
        let mut bytes = [0u8; 4];
        // A failing OS random source only makes the retry more likely to collide again.
        let _ = getrandom::fill(&mut bytes);
        Self(format!("{}-{:08x}", self.0, u32::from_le_bytes(bytes)))
    }

    /// Whether `slug` is this slug, or this slug with a random suffix: a new title
    /// with the same base keeps the article's current slug.
    pub fn is_base_of(&self, slug: &str) -> bool {
        slug.strip_prefix(self.0.as_str()).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix('-')
                    .is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    }

    /// Whether this slug may not be used as it is.
    pub fn is_reserved(&self) -> bool {
        RESERVED.contains(&self.0.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_becomes_lowercase_words_joined_by_dashes() {
        assert_eq!(Slug::from_title("How to train your dragon").as_str(), "how-to-train-your-dragon");
        assert_eq!(Slug::from_title("  Hello,  World!! ").as_str(), "hello-world");
        assert_eq!(Slug::from_title("Ünïcode Straße 2").as_str(), "ünïcode-straße-2");
    }

    #[test]
    fn a_title_without_letters_still_gets_a_slug() {
        assert_eq!(Slug::from_title("!!!").as_str(), "article");
    }

    #[test]
    fn long_titles_are_cut() {
        let slug = Slug::from_title(&"word ".repeat(100));
        assert!(slug.as_str().chars().count() <= Slug::MAX_BASE_CHARS + 1);
        assert!(!slug.as_str().ends_with('-'));
    }

    #[test]
    fn feed_is_reserved_and_a_suffix_makes_it_usable() {
        let slug = Slug::from_title("Feed");
        assert!(slug.is_reserved());
        let suffixed = slug.with_random_suffix();
        assert!(!suffixed.is_reserved());
        assert!(suffixed.as_str().starts_with("feed-"));
        assert_eq!(suffixed.as_str().len(), "feed-".len() + 8);
        assert!(slug.is_base_of(suffixed.as_str()));
    }

    #[test]
    fn a_slug_is_the_base_of_itself_and_its_suffixed_forms_only() {
        let base = Slug::from_title("Dragons");
        assert!(base.is_base_of("dragons"));
        assert!(base.is_base_of("dragons-0a1b2c3d"));
        assert!(!base.is_base_of("dragons-training"));
        assert!(!base.is_base_of("dragon"));
    }
}
