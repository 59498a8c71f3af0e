// One step of a relying party built on Node's openid-client v6, for
// tests/test_interop_openid_client.py.
//
// Reads one JSON instruction on stdin, runs it against the server with
// openid-client (discovery first, as a real RP does on start-up), and prints
// one JSON line on stdout: {"ok": true, "result": ...} or
// {"ok": false, "error": {...}} with everything openid-client said (name,
// code, OAuth error, status, cause). The exit status is 0 in both cases; a
// bad instruction or a crash of this script exits 2.
//
// Instruction fields: step, issuer, client_id, client_secret (absent: a
// public client, token_endpoint_auth_method "none"), algorithm ("oidc", the
// default, or "oauth2" for RFC 8414 metadata), dpop_key (optional: a private
// EC P-256 JWK; callback, refresh and userinfo then go through openid-client's
// DPoP handle for that key, RFC 9449), and the step's own fields (see STEPS
// below).
import * as client from 'openid-client';

const STEPS = {
  // The server metadata openid-client resolved and accepted.
  async discover(config) {
    return config.serverMetadata();
  },

  // A fresh authorization request: PKCE S256 verifier, state and nonce, kept
  // by the caller and handed back to `callback`.
  async authorization_url(config, { redirect_uri, scope, params = {} }) {
    const code_verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri,
      scope,
      state,
      nonce,
      code_challenge: await client.calculatePKCECodeChallenge(code_verifier),
      code_challenge_method: 'S256',
      ...params,
    });
    return { url: url.href, code_verifier, state, nonce };
  },

  // Validates the authorization response (state, RFC 9207 iss when the server
  // advertises it, error) and redeems the code; the ID token is required and
  // checked (signature, iss, aud, exp, iat, nonce, auth_time with max_age).
  async callback(config, { callback_url, code_verifier, state, nonce, max_age }, DPoP) {
    const tokens = await client.authorizationCodeGrant(
      config,
      new URL(callback_url),
      {
        pkceCodeVerifier: code_verifier,
        expectedState: state,
        expectedNonce: nonce,
        idTokenExpected: true,
        ...(max_age !== undefined && { maxAge: max_age }),
      },
      undefined,
      { DPoP },
    );
    return tokenResult(tokens);
  },

  async refresh(config, { refresh_token, params }, DPoP) {
    return tokenResult(await client.refreshTokenGrant(config, refresh_token, params, { DPoP }));
  },

  // fetchUserInfo refuses an answer whose sub differs from expected_sub. With a
  // DPoP handle it sends `Authorization: DPoP` and a proof with `ath`.
  async userinfo(config, { access_token, expected_sub }, DPoP) {
    return client.fetchUserInfo(config, access_token, expected_sub, { DPoP });
  },

  async revoke(config, { token, token_type_hint }) {
    await client.tokenRevocation(config, token, token_type_hint ? { token_type_hint } : undefined);
    return { revoked: true };
  },

  async introspect(config, { token, token_type_hint }) {
    return client.tokenIntrospection(config, token, token_type_hint ? { token_type_hint } : undefined);
  },

  async device_start(config, { scope }) {
    return client.initiateDeviceAuthorization(config, { scope });
  },

  // Waits the server's interval before each poll, as the library always does;
  // authorization_pending and slow_down make it wait and poll again.
  async device_poll(config, { device_authorization, timeout_seconds = 40 }) {
    const tokens = await client.pollDeviceAuthorizationGrant(config, device_authorization, undefined, {
      signal: AbortSignal.timeout(timeout_seconds * 1000),
    });
    return tokenResult(tokens);
  },
};

// openid-client's DPoP handle for a key pair made by the test (jwcrypto): the
// test knows the key's RFC 7638 thumbprint independently of this library.
async function dpopHandle(config, dpop_key) {
  if (!dpop_key) return undefined;
  const { kty, crv, x, y, d } = dpop_key;
  if (kty !== 'EC' || crv !== 'P-256') throw new TypeError('dpop_key: an EC P-256 JWK is expected');
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256' };
  const privateKey = await crypto.subtle.importKey('jwk', { kty, crv, x, y, d }, algorithm, false, ['sign']);
  // Extractable: openid-client puts the public key in every proof's header.
  const publicKey = await crypto.subtle.importKey('jwk', { kty, crv, x, y }, algorithm, true, ['verify']);
  return client.getDPoPHandle(config, { privateKey, publicKey });
}

function tokenResult(tokens) {
  // JSON drops the helper functions; the validated ID token claims go along.
  return { ...tokens, id_token_claims: tokens.claims() ?? null };
}

// What openid-client raised, in full: its classes carry the detail in fields
// that JSON.stringify would drop (code, error, status, cause).
function describe(error, depth = 0) {
  if (depth > 4) return '...';
  if (error instanceof URLSearchParams) return Object.fromEntries(error);
  if (error instanceof Response) return { status: error.status, url: error.url };
  if (error instanceof Error) {
    const described = { name: error.name, message: error.message };
    for (const key of ['code', 'error', 'error_description', 'status']) {
      if (error[key] !== undefined) described[key] = error[key];
    }
    if (error.cause !== undefined) described.cause = describe(error.cause, depth + 1);
    return described;
  }
  if (Array.isArray(error)) return error.map((item) => describe(item, depth + 1));
  if (error && typeof error === 'object') {
    return Object.fromEntries(Object.entries(error).map(([key, value]) => [key, describe(value, depth + 1)]));
  }
  return error;
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function main() {
  const instruction = await readStdin();
  const step = STEPS[instruction.step];
  if (!step) {
    process.stderr.write(`unknown step ${JSON.stringify(instruction.step)}\n`);
    process.exit(2);
  }
  const { issuer, client_id, client_secret, algorithm = 'oidc' } = instruction;
  try {
    const config = await client.discovery(
      new URL(issuer),
      client_id,
      undefined,
      client_secret ? client.ClientSecretBasic(client_secret) : client.None(),
      {
        algorithm,
        // The test server is pytest-django's live server on the loopback
        // interface, plain http: openid-client refuses http unless told, and
        // this flag is for exactly such a local test, never for production.
        execute: [client.allowInsecureRequests],
        timeout: 20,
      },
    );
    const DPoP = await dpopHandle(config, instruction.dpop_key);
    const result = await step(config, instruction, DPoP);
    if (DPoP && result && typeof result === 'object') {
      // The thumbprint openid-client computes for its key (what it would send as dpop_jkt).
      result.dpop_handle_jkt = await DPoP.calculateThumbprint();
    }
    process.stdout.write(JSON.stringify({ ok: true, result }) + '\n');
  } catch (error) {
    process.stdout.write(JSON.stringify({ ok: false, error: describe(error) }) + '\n');
  }
}

main().catch((error) => {
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(2);
});
