//! Credentials: JWT access tokens and Argon2id password hashes.

pub mod jwt;
pub mod password;

pub use jwt::JwtKeys;
pub use password::PasswordHasher;
