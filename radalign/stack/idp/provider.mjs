// A real OpenID Connect provider for dev and CI (npm `oidc-provider`, a certified OP), started by
// `radalign.stack.idp`. NOT for production: in-memory storage, quick-start signing keys and the
// library's development login/consent screens (any password; the login names an account below).
//
// Environment:
//   RADALIGN_IDP_PORT     port on 127.0.0.1 (the issuer is http://127.0.0.1:PORT)
//   RADALIGN_IDP_CLIENTS  JSON list of oidc-provider client metadata (client_id, client_secret, redirect_uris ...)
//   RADALIGN_IDP_USERS    JSON object: login -> claims (name, given_name, family_name, roles)
//   RADALIGN_IDP_COOKIE_KEY  the provider's cookie signing key
import Provider from 'oidc-provider';

const port = Number(process.env.RADALIGN_IDP_PORT || 18190);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.RADALIGN_IDP_CLIENTS || '[]');
const users = JSON.parse(process.env.RADALIGN_IDP_USERS || '{}');

const provider = new Provider(issuer, {
  clients,
  claims: { openid: ['sub'], profile: ['name', 'given_name', 'family_name'], roles: ['roles'] },
  scopes: ['openid', 'profile', 'roles', 'offline_access'],
  // the RP reads the profile and roles from the ID token
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  findAccount: async (ctx, id) => (users[id]
    ? { accountId: id, claims: async () => ({ sub: id, ...users[id] }) }
    : undefined),
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: [process.env.RADALIGN_IDP_COOKIE_KEY || 'radalign-dev-idp'] },
  ttl: { Session: 8 * 3600, Interaction: 600, Grant: 8 * 3600, IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60 },
});
provider.on('server_error', (ctx, err) => console.error('idp server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
