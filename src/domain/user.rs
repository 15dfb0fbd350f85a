//! User fields: username, email, password, bio and image.

use super::text_newtype;

/// A username: 1 to 40 letters, digits, `_`, `-` or `.`, with at least one letter
/// or digit (so never `.` or `..`), so it is safe in a URL path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MAX_CHARS: usize = 40;

    pub fn parse(input: &str) -> Result<Self, String> {
        let name = super::bounded_text(input, Self::MAX_CHARS)?;
        if !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err("may contain only letters, digits, '_', '-' and '.'".to_owned());
        }
        if !name.chars().any(char::is_alphanumeric) {
            return Err("must contain a letter or a digit".to_owned());
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a username looks like, for telling apart names that only differ by
/// look-alike characters: the confusable skeleton of Unicode TR 39 (section 4:
/// NFD, each character replaced by its prototype, NFD again) of the name in
/// lower case, lower-cased again. Two usernames with the same skeleton may not
/// both exist (the unique index `users_username_skeleton_key`).
///
/// Usernames are one account in any case (`Alice` is `alice`), so names are
/// compared in lower case: `ALICE`, `alice` and a Cyrillic `аlice` share one
/// skeleton. The prototypes the table gives may be capitals (`0` becomes `O`),
/// hence the second lower-casing: `l0ve` is `love`. Taken from the table as it
/// is: `m` becomes `rn`, so `rnark` and `mark` are one name, as they look in
/// most fonts. What lower-casing first costs: a capital `I` standing for an
/// `l` (`Ian` beside `lan`) is not caught, since `i` and `l` differ.
pub fn username_skeleton(name: &str) -> String {
    unicode_security::confusable_detection::skeleton(&name.to_lowercase()).collect::<String>().to_lowercase()
}

/// An email address: one `@`, a non-empty local part, a dotted domain, no spaces.
/// Deliverability is not this type's business; the shape is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_CHARS: usize = 254;

    pub fn parse(input: &str) -> Result<Self, String> {
        let email = super::bounded_text(input, Self::MAX_CHARS)?;
        let valid = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if valid { Ok(Self(email)) } else { Err("is invalid".to_owned()) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 8 to 128 characters, kept exactly as typed (no trimming).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(input: &str) -> Result<Self, String> {
        let len = input.chars().count();
        if input.trim().is_empty() {
            Err("can't be blank".to_owned())
        } else if len < Self::MIN_CHARS {
            Err(format!("is too short (minimum is {} characters)", Self::MIN_CHARS))
        } else if len > Self::MAX_CHARS {
            Err(format!("is too long (maximum is {} characters)", Self::MAX_CHARS))
        } else {
            Ok(Self(input.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Password {
    /// Passwords longer than this are not looked up: the longest entry of the
    /// lists is 23 characters, and the estimate's cost grows with the length
    /// (0.3 ms at 28 characters, 3 ms at 125, on this machine's release build).
    const COMMON_CHECK_MAX_CHARS: usize = 32;

    /// Whether the password is common or trivially guessable: zxcvbn's best
    /// reading of it is one single pattern, i.e. the whole password is one
    /// entry of its frequency lists (the 30,000 most common passwords, 30,000
    /// English words, names, surnames, film and TV words; case-insensitively,
    /// reversed or with l33t substitutions: `P@ssw0rd`, `drowssap`), one
    /// repeat (`aaaaaaaa`, `jakejake`), one sequence (`abcdefgh`, `12345678`),
    /// one keyboard walk (`zxcvbnm,./`) or one date. This refuses every one of
    /// the 3,000 most common passwords of 8 characters or more on its list
    /// (ASVS 5.0 V6.2.4 asks for at least those), while a passphrase of a few
    /// words (`correct horse battery staple`) is several patterns and passes.
    pub fn is_common(&self) -> bool {
        if self.0.chars().count() > Self::COMMON_CHECK_MAX_CHARS {
            return false;
        }
        let estimate = zxcvbn::zxcvbn(&self.0, &[]);
        matches!(estimate.sequence(), [only] if !matches!(only.pattern, zxcvbn::matching::patterns::MatchPattern::BruteForce))
    }
}

/// Whether new passwords (registration, a password change) that are common are
/// refused: `COMMON_PASSWORDS`, `refuse` by default. `allow` is for servers that
/// run the official RealWorld suites, which register with `password123`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CommonPasswords {
    #[default]
    Refuse,
    Allow,
}

impl CommonPasswords {
    /// `refuse` or `allow`, in any case.
    pub fn parse(input: &str) -> Result<Self, String> {
        match input.trim().to_ascii_lowercase().as_str() {
            "refuse" => Ok(Self::Refuse),
            "allow" => Ok(Self::Allow),
            other => Err(format!("`{other}` is neither `refuse` nor `allow`")),
        }
    }

    /// The 422 message for a new password this setting refuses.
    pub fn check(self, password: &Password) -> Result<(), String> {
        if self == Self::Refuse && password.is_common() {
            Err("is too common or too easy to guess: use a longer one, a few unrelated words for example".to_owned())
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

text_newtype!(
    /// A bio; may be empty (the API's "no bio").
    Bio,
    max = 1_000
);

impl Bio {
    /// Empty or blank input clears the bio.
    pub fn parse_optional(input: &str) -> Result<Self, String> {
        if input.chars().count() <= Self::MAX_CHARS && input.trim().is_empty() {
            Ok(Self(String::new()))
        } else {
            Self::parse(input)
        }
    }
}

/// An avatar URL, `http` or `https`; empty clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUrl(String);

impl ImageUrl {
    pub const MAX_CHARS: usize = 2_048;

    pub fn parse(input: &str) -> Result<Self, String> {
        if input.chars().count() > Self::MAX_CHARS {
            return Err(format!("is too long (maximum is {} characters)", Self::MAX_CHARS));
        }
        let url = input.trim();
        if url.is_empty() {
            return Ok(Self(String::new()));
        }
        let lower = url.to_ascii_lowercase();
        let has_host = |rest: &str| !rest.is_empty() && !rest.starts_with('/');
        let ok =
            lower.strip_prefix("https://").is_some_and(has_host) || lower.strip_prefix("http://").is_some_and(has_host);
        if !ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must be an http or https URL".to_owned());
        }
        Ok(Self(url.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_allow_url_safe_characters_only() {
        assert!(Username::parse("jake_the-dog.42").is_ok());
        assert!(Username::parse("Zoë").is_ok());
        assert!(Username::parse("two words").is_err());
        assert!(Username::parse("a/b").is_err());
        assert!(Username::parse(".").is_err());
        assert!(Username::parse("..").is_err());
        assert!(Username::parse("-_-").is_err());
        assert!(Username::parse("").is_err());
        assert!(Username::parse(&"x".repeat(41)).is_err());
        assert_eq!(Username::parse("  jake ").map(|u| u.0), Ok("jake".to_owned()));
    }

    #[test]
    fn look_alike_usernames_share_a_skeleton_and_others_do_not() {
        let alice = username_skeleton("alice");
        for same in ["аlice", "Аlice", "AlIce", "ALICE", "\u{410}LICE"] {
            assert_eq!(username_skeleton(same), alice, "{same}");
        }
        assert_eq!(username_skeleton("rnark"), username_skeleton("mark"));
        assert_eq!(username_skeleton("l0ve"), username_skeleton("love"));
        assert_ne!(username_skeleton("Ian"), username_skeleton("lan"), "compared in lower case");
        assert_eq!(username_skeleton("user10"), "userlo");
        for other in ["bob", "alicia", "alice2", "zoë", "ilan"] {
            assert_ne!(username_skeleton(other), alice, "{other}");
        }
        assert_ne!(username_skeleton("Zoë"), username_skeleton("zoe"), "a diaeresis is not a look-alike");
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(Email::parse("jake@jake.jake").is_ok());
        for bad in ["jake", "@jake.io", "jake@", "jake@io", "ja ke@jake.io", "a@b@c.io", "a@.io", "a@io."] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn passwords_are_bounded_and_never_printed() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("        ").is_err());
        assert!(Password::parse(&"p".repeat(129)).is_err());
        let password = Password::parse("correct horse").expect("valid");
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn common_and_trivial_passwords_are_refused_unless_allowed() {
        let refused = [
            "password",
            "Password",
            "PASSWORD",
            "p@ssw0rd",
            "drowssap",
            "password123",
            "12345678",
            "qwertyuiop",
            "iloveyou",
            "trustno1",
            "aaaaaaaa",
            "jakejake",
            "abcdefgh",
            "zxcvbnm,./",
            "elephant",
        ];
        for input in refused {
            let password = Password::parse(input).expect("valid shape");
            assert!(password.is_common(), "{input}");
            assert!(CommonPasswords::Refuse.check(&password).is_err(), "{input}");
            assert_eq!(CommonPasswords::Allow.check(&password), Ok(()), "{input}");
        }
        for input in
            ["correct horse battery staple", "a brand new password", "Tr0ub4dor&3", "Xq3vN8kR0tYb", "supersecret!7"]
        {
            let password = Password::parse(input).expect("valid shape");
            assert!(!password.is_common(), "{input}");
            assert_eq!(CommonPasswords::Refuse.check(&password), Ok(()), "{input}");
        }
        // Past 32 characters no list entry fits, and the check is skipped.
        assert!(Password::parse(&"a".repeat(32)).expect("valid").is_common());
        assert!(!Password::parse(&"a".repeat(33)).expect("valid").is_common());
    }

    #[test]
    fn the_common_passwords_setting_is_refuse_or_allow() {
        assert_eq!(CommonPasswords::parse(" Allow "), Ok(CommonPasswords::Allow));
        assert_eq!(CommonPasswords::parse("refuse"), Ok(CommonPasswords::Refuse));
        assert!(CommonPasswords::parse("off").is_err());
        assert_eq!(CommonPasswords::default(), CommonPasswords::Refuse);
    }

    #[test]
    fn images_must_be_web_urls_or_empty() {
        assert_eq!(ImageUrl::parse("").map(|i| i.0), Ok(String::new()));
        assert!(ImageUrl::parse("https://example.com/a.png").is_ok());
        assert!(ImageUrl::parse("javascript:alert(1)").is_err());
        assert!(ImageUrl::parse("https://").is_err());
    }
}
