// A real OpenID Provider (npm's oidc-provider, pinned in package-lock.json) on
// loopback, for scripts/oidc-e2e: one confidential client (Conduit), PKCE
// required, and the provider's own development login and consent screens
// (devInteractions: any password is accepted, the login name is the account).
//
// The accounts are decided by the login name:
//   alice               alice@example.com, email_verified: true
//   bob                 bob@example.com, email_verified: true
//   mallory-unverified  victim@example.com, email_verified: false
//   anything else       <name>@example.com, email_verified: false
//
// Usage: node scripts/oidc-provider.mjs
// Environment (all required): OIDC_E2E_PORT, OIDC_E2E_CLIENT_ID,
// OIDC_E2E_CLIENT_SECRET, OIDC_E2E_REDIRECT_URL. The issuer is
// http://127.0.0.1:$OIDC_E2E_PORT (http: a development provider on loopback).
// Prints "ready <issuer>" once it listens.
import Provider from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`oidc-provider: ${name} is required`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('OIDC_E2E_PORT'));
const issuer = `http://127.0.0.1:${port}`;

const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Example' },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob Example' },
  'mallory-unverified': { email: 'victim@example.com', email_verified: false, name: 'Mallory' },
};

const configuration = {
  clients: [
    {
      client_id: required('OIDC_E2E_CLIENT_ID'),
      client_secret: required('OIDC_E2E_CLIENT_SECRET'),
      redirect_uris: [required('OIDC_E2E_REDIRECT_URL')],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  // The scope's claims go in the ID token itself (Conduit reads no userinfo).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const account = accounts[id] ?? { email: `${id}@example.com`, email_verified: false, name: id };
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...account };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => console.error('oidc-provider: server_error', err));
provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
