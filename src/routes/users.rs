//! `/api/users`, `/api/users/login` and `/api/user`: accounts and sessions.

use axum::{
    extract::State,
    http::{StatusCode, header::SET_COOKIE},
    response::{IntoResponse as _, Response},
};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    app::AppState,
    auth::session::{self, ClientInfo, Delivery, Issued},
    db,
    domain::{self, Bio, Email, ImageUrl, Password, Username},
    error::{Error, Result, ValidationErrors},
    extract::{AuthUser, Json},
    openapi::{BadRequest, Conflict, PayloadTooLarge, Unauthorized, UnsupportedMediaType, ValidationFailed},
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUserRequest {
    user: NewUser,
}

// The limits in `#[schema(...)]` are the domain types' constants, written out as
// utoipa takes only literals there; a test in tests/api/openapi.rs
// (`request_limits_in_the_document_and_the_database_are_the_domain_types`) keeps them the same.
/// The fields are parsed as optional so that a missing one is a 422 naming it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUser {
    #[schema(required = true, value_type = String, min_length = 1, max_length = 40)]
    username: Option<String>,
    #[schema(required = true, value_type = String, format = Email, min_length = 1, max_length = 254)]
    email: Option<String>,
    #[schema(required = true, value_type = String, format = Password, min_length = 8, max_length = 128)]
    password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginUserRequest {
    user: LoginUser,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginUser {
    #[schema(required = true, value_type = String, min_length = 1)]
    email: Option<String>,
    #[schema(required = true, value_type = String, format = Password, min_length = 1)]
    password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateUserRequest {
    user: UpdateUser,
}

/// Every field optional; `bio` and `image` may be `null` or `""` to clear them.
/// `username`, `email` and `password` may be neither: each must be valid when present.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateUser {
    #[serde(default, deserialize_with = "super::non_null")]
    #[schema(required = false, value_type = String, min_length = 1, max_length = 40)]
    username: Option<String>,
    #[serde(default, deserialize_with = "super::non_null")]
    #[schema(required = false, value_type = String, format = Email, min_length = 1, max_length = 254)]
    email: Option<String>,
    #[serde(default, deserialize_with = "super::non_null")]
    /// 8 to 128 characters.
    #[schema(required = false, value_type = String, format = Password, min_length = 8, max_length = 128)]
    password: Option<String>,
    #[serde(default, deserialize_with = "super::nullable")]
    #[schema(value_type = Option<String>, max_length = 1000)]
    bio: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::nullable")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    image: Option<Option<String>>,
}

impl TryFrom<NewUser> for domain::NewUser {
    type Error = ValidationErrors;

    /// Absent and blank are both "can't be blank".
    fn try_from(new: NewUser) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let username = errors.check("username", Username::parse(new.username.as_deref().unwrap_or_default()));
        let email = errors.check("email", Email::parse(new.email.as_deref().unwrap_or_default()));
        let password = errors.check("password", Password::parse(new.password.as_deref().unwrap_or_default()));
        match (username, email, password) {
            (Some(username), Some(email), Some(password)) => Ok(Self { username, email, password }),
            _ => Err(errors),
        }
    }
}

impl<'a> TryFrom<&'a LoginUser> for domain::Credentials<'a> {
    type Error = ValidationErrors;

    /// Only blank fields are refused: the password as typed (`"   "` is tried),
    /// the email trimmed.
    fn try_from(login: &'a LoginUser) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let email = login.email.as_deref().map(str::trim).unwrap_or_default();
        let password = login.password.as_deref().unwrap_or_default();
        if email.is_empty() {
            errors.add("email", "can't be blank");
        }
        if password.is_empty() {
            errors.add("password", "can't be blank");
        }
        if errors.is_empty() { Ok(Self { email, password }) } else { Err(errors) }
    }
}

impl TryFrom<UpdateUser> for domain::UserChanges {
    type Error = ValidationErrors;

    /// Each field present must be valid; `null` or `""` clears `bio` and `image`.
    fn try_from(changes: UpdateUser) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let username = changes.username.as_deref().and_then(|v| errors.check("username", Username::parse(v)));
        let email = changes.email.as_deref().and_then(|v| errors.check("email", Email::parse(v)));
        // RealWorld 2.0 refuses `"password": ""` (a settings form must leave the field out).
        let password = changes.password.as_deref().and_then(|v| errors.check("password", Password::parse(v)));
        let bio = changes.bio.and_then(|v| errors.check("bio", Bio::parse_optional(v.as_deref().unwrap_or_default())));
        let image =
            changes.image.and_then(|v| errors.check("image", ImageUrl::parse(v.as_deref().unwrap_or_default())));
        if errors.is_empty() { Ok(Self { username, email, password, bio, image }) } else { Err(errors) }
    }
}

/// The caller's own account, with a token. `bio` and `image` are `null` when unset.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    email: String,
    /// The access token, for `Authorization: Token <token>` or `Bearer <token>`.
    token: String,
    /// The new refresh token, only when the request asked for it with
    /// `X-Refresh-Token-Delivery: body` (otherwise it is in the refresh cookie).
    #[serde(rename = "refreshToken", skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    refresh_token: Option<String>,
    username: String,
    #[schema(required = true)]
    bio: Option<String>,
    #[schema(required = true)]
    image: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    user: User,
}

fn respond(row: db::users::UserRow, token: String) -> Json<UserResponse> {
    Json(UserResponse {
        user: User {
            email: row.email,
            token,
            refresh_token: None,
            username: row.username,
            bio: super::unset_if_empty(row.bio),
            image: super::unset_if_empty(row.image),
        },
    })
}

/// The answer to a sign-in or refresh: the user with the new access token, and
/// the new refresh token where the client wants it (`delivery`): in the body's
/// `user.refreshToken`, or in the `Set-Cookie` of the refresh cookie.
pub fn signed_in(row: db::users::UserRow, issued: &Issued, delivery: Delivery, status: StatusCode) -> Response {
    let row_id = row.id;
    let Json(mut body) = respond(row, issued.access_token.clone());
    if delivery == Delivery::Body {
        body.user.refresh_token = Some(issued.refresh_token.expose_secret().to_owned());
    }
    let mut response = (status, Json(body)).into_response();
    if delivery == Delivery::Cookie {
        response.headers_mut().insert(SET_COOKIE, issued.cookie());
    }
    // The user's next reads must see this sign-in's writes (the read replica).
    response.extensions_mut().insert(db::WroteAs(row_id));
    response
}

/// Register a new user.
#[utoipa::path(post, path = "/users", tag = "User and Authentication", operation_id = "CreateUser",
    request_body = NewUserRequest,
    params(("X-Refresh-Token-Delivery" = Option<String>, Header, description = "`body` to receive the refresh token in `user.refreshToken` instead of the `__Host-conduit-refresh` cookie")),
    responses(
        (status = 201, description = "The new user, with a token; a session is opened", body = UserResponse,
            headers(("Set-Cookie" = String, description = "`__Host-conduit-refresh=<refresh token>; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=<idle lifetime>`, unless the refresh token was asked for in the body"))),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all)]
pub async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    delivery: Delivery,
    Json(NewUserRequest { user: new }): Json<NewUserRequest>,
) -> Result<Response> {
    let domain::NewUser { username, email, password } = new.try_into()?;
    state.common_passwords.check(&password).map_err(|err| ValidationErrors::single("password", err))?;
    let hash = state.hasher.hash(&password).await?;
    let mut tx = state.writes.begin().await?;
    let row = db::users::insert(&mut *tx, username.as_str(), email.as_str(), &hash).await?;
    let issued = session::open(&mut tx, &state.jwt, row.id, "register", &client).await?;
    tx.commit().await?;
    tracing::info!(user_id = row.id, session = %issued.session_id, "user registered");
    Ok(signed_in(row, &issued, delivery, StatusCode::CREATED))
}

/// Log in: one 401 for an unknown email and a wrong password, after the same
/// Argon2 work in both cases.
#[utoipa::path(post, path = "/users/login", tag = "User and Authentication", operation_id = "Login",
    request_body = LoginUserRequest,
    params(("X-Refresh-Token-Delivery" = Option<String>, Header, description = "`body` to receive the refresh token in `user.refreshToken` instead of the `__Host-conduit-refresh` cookie")),
    responses(
        (status = 200, description = "The user, with a new token; a session is opened", body = UserResponse,
            headers(("Set-Cookie" = String, description = "`__Host-conduit-refresh=<refresh token>; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=<idle lifetime>`, unless the refresh token was asked for in the body"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    delivery: Delivery,
    Json(LoginUserRequest { user: login }): Json<LoginUserRequest>,
) -> Result<Response> {
    let domain::Credentials { email, password } = (&login).try_into()?;
    // An email PostgreSQL cannot even store matches no account.
    let found = if email.contains('\0') { None } else { db::users::credentials_by_email(&state.writes, email).await? };
    let Some(found) = found else {
        state.hasher.verify_dummy(password).await?;
        return Err(Error::InvalidCredentials);
    };
    if !state.hasher.verify(password, &found.password_hash).await? {
        return Err(Error::InvalidCredentials);
    }
    let mut conn = state.writes.acquire().await?;
    let issued = session::open(&mut conn, &state.jwt, found.user.id, "password", &client).await?;
    Ok(signed_in(found.user, &issued, delivery, StatusCode::OK))
}

/// The current user, with the token they presented.
#[utoipa::path(get, path = "/user", tag = "User and Authentication", operation_id = "GetCurrentUser",
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The current user", body = UserResponse),
        (status = 401, response = Unauthorized),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn current(State(state): State<AppState>, user: AuthUser) -> Result<Json<UserResponse>> {
    let row = state.reads.run_for(Some(user.id), async |conn| db::users::find_by_id(conn, user.id).await).await?;
    // The account can be deleted after the token passed the authentication path.
    let row = row.ok_or(db::Error::CallerGone)?;
    Ok(respond(row, user.token))
}

/// Update any subset of the current user's fields. Re-sending one's own username
/// or email is not a conflict. A new password or a changed email revokes every
/// other session of the user (this one stays), in the same transaction.
#[utoipa::path(put, path = "/user", tag = "User and Authentication", operation_id = "UpdateCurrentUser",
    request_body = UpdateUserRequest,
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The updated user", body = UserResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Json(UpdateUserRequest { user: changes }): Json<UpdateUserRequest>,
) -> Result<Json<UserResponse>> {
    let domain::UserChanges { username, email, password, bio, image } = changes.try_into()?;
    let password_hash = match &password {
        Some(password) => {
            state.common_passwords.check(password).map_err(|err| ValidationErrors::single("password", err))?;
            Some(state.hasher.hash(password).await?)
        }
        None => None,
    };
    let changes = db::users::Changes {
        username: username.as_ref().map(Username::as_str),
        email: email.as_ref().map(Email::as_str),
        password_hash: password_hash.as_deref(),
        bio: bio.as_ref().map(Bio::as_str),
        image: image.as_ref().map(ImageUrl::as_str),
    };
    let (row, revoked) = if changes.password_hash.is_none() && changes.email.is_none() {
        // No credential at stake: one statement, as before sessions.
        (db::users::update(&state.writes, user.id, &changes).await?, Vec::new())
    } else {
        let mut tx = state.writes.begin().await?;
        // Before the update, which changes the email compared here.
        let revoked = db::sessions::revoke_others_on_credentials_change(
            &mut *tx,
            user.id,
            user.session,
            changes.password_hash.is_some(),
            changes.email,
        )
        .await?;
        let row = db::users::update(&mut *tx, user.id, &changes).await?;
        tx.commit().await?;
        (row, revoked)
    };
    let row = row.ok_or(db::Error::CallerGone)?;
    if !revoked.is_empty() {
        tracing::info!(user_id = user.id, revoked = revoked.len(), "credentials changed: other sessions revoked");
    }
    for id in revoked {
        state.revocations.revoke_session(id);
    }
    Ok(respond(row, user.token))
}
