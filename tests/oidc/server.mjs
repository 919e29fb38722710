// A real OpenID provider (npm oidc-provider) for portcullis's token tests.
//
//   node server.mjs PORT        (0 picks a free port)
//
// Binds 127.0.0.1 only and prints `READY <issuer>` on stdout once it serves. It issues
// client_credentials access tokens: JWTs (RS256, from its JWKS) for the resource
// urn:portcullis:jwt-api, opaque tokens for urn:portcullis:opaque-api. Opaque tokens can
// be introspected (RFC 7662) by the client `portcullis` and revoked (RFC 7009) by the
// client that got them.
//
// It also logs people in: the client `login-client` runs the authorization-code flow
// through oidc-provider's built-in dev interactions (a login form that takes an account
// id, then a consent form), for the accounts in ACCOUNTS below. An access token issued
// without a resource indicator is opaque and good at the userinfo endpoint (`/me`).
// Everything lives in memory; the signing key and cookie key are new every run.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

export const JWT_RESOURCE = 'urn:portcullis:jwt-api';
export const OPAQUE_RESOURCE = 'urn:portcullis:opaque-api';

const port = Number.parseInt(process.argv[2] ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`usage: node server.mjs PORT (got ${process.argv[2]})`);
  process.exit(2);
}

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: 'oidc-provider-rs256',
  alg: 'RS256',
  use: 'sig',
};

// The people who can log in (the dev login form's "login" is the account id, which is
// also `sub`), with the claims userinfo releases per scope (see `claims` below).
export const ACCOUNTS = {
  '8d2c4d6e-7f1a-4b3c-9e5d-0a1b2c3d4e5f': {
    email: 'testuser@example.com',
    email_verified: true,
    preferred_username: 'testuser',
    name: 'Test User',
  },
};

const resourceServers = {
  [JWT_RESOURCE]: { accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } },
  [OPAQUE_RESOURCE]: { accessTokenFormat: 'opaque' },
};

const provider = new Provider(issuer, {
  clients: [
    {
      // Gets tokens with client_credentials and may revoke its own.
      client_id: 'test-client',
      client_secret: 'test-client-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: 'read write',
    },
    {
      // Logs people in with the authorization-code flow. The redirect URI is never
      // visited: the test reads the code from the Location header.
      client_id: 'login-client',
      client_secret: 'login-client-secret',
      grant_types: ['authorization_code'],
      redirect_uris: ['https://client.example.com/callback'],
      response_types: ['code'],
    },
    {
      // portcullis itself, calling the introspection endpoint.
      client_id: 'portcullis',
      client_secret: 'portcullis-secret',
      grant_types: [],
      redirect_uris: [],
      response_types: [],
    },
  ],
  jwks: { keys: [signingKey] },
  scopes: ['openid', 'read', 'write'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  async findAccount(_ctx, id) {
    const claims = ACCOUNTS[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  features: {
    // The built-in login and consent pages (no interactions.url is configured).
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, resource) {
        const info = resourceServers[resource];
        if (!info) throw new errors.InvalidTarget();
        return { scope: 'read write', audience: resource, accessTokenTTL: 600, ...info };
      },
    },
  },
});
// Test runs are noisy enough: keep server errors, drop the dev-mode warnings' repeats.
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

server.on('request', provider.callback());
process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`READY ${issuer}`);
