// Calls batchd's ingress with the official TypeScript SDK as a test plans them; prints, as one
// JSON line, what each call got back and every HTTP attempt the SDK made for it.
//
// Environment: BATCHD_URL (the ingress's base URL), BATCHD_TOKEN (a producer token),
// BATCHD_AUTH ("api_key": sent as x-api-key, the default; "bearer": as Authorization: Bearer).
// Argument: the plan, JSON:
//   {"client": {"timeout_ms": 60000, "max_retries": 0, "headers": {...}},
//    "parallel": false,
//    "calls": [{"op": "create" | "beta.create" | "count_tokens" | "models.list" |
//               "models.retrieve", "params": {...}, "betas": [...], "model": "..."}]}
// Output: {"calls": [{"ok": true, "data": ..., "request_id": ..., "attempts": [...]} |
//                    {"ok": false, "error": {"class", "status", "body", "headers"}, ...}]}
import Anthropic from '@anthropic-ai/sdk';

const plan = JSON.parse(process.argv[2] ?? '{}');
const token = process.env.BATCHD_TOKEN;
const auth =
  process.env.BATCHD_AUTH === 'bearer'
    ? { apiKey: null, authToken: token }
    : { apiKey: token, authToken: null };

// One client per call, so each call's attempts are its own.
function client(attempts) {
  const options = plan.client ?? {};
  return new Anthropic({
    baseURL: process.env.BATCHD_URL,
    ...auth,
    timeout: options.timeout_ms ?? 60_000,
    maxRetries: options.max_retries ?? 0,
    defaultHeaders: options.headers ?? {},
    fetch: async (url, init) => {
      const attempt = {
        retry_count: new Headers(init?.headers).get('x-stainless-retry-count'),
        status: null,
      };
      attempts.push(attempt);
      const response = await fetch(url, init);
      attempt.status = response.status;
      return response;
    },
  });
}

async function send(sdk, call) {
  switch (call.op) {
    case 'create':
      return sdk.messages.create(call.params).withResponse();
    case 'beta.create':
      return sdk.beta.messages.create({ ...call.params, betas: call.betas }).withResponse();
    case 'count_tokens':
      return sdk.messages.countTokens(call.params).withResponse();
    case 'models.retrieve':
      return sdk.models.retrieve(call.model).withResponse();
    case 'models.list': {
      // Auto-pagination: every page, fetched through batchd.
      const ids = [];
      for await (const model of sdk.models.list(call.params ?? {})) ids.push(model.id);
      return { data: ids, response: null };
    }
    default:
      throw new Error(`unknown op ${call.op}`);
  }
}

async function run(call) {
  const attempts = [];
  try {
    const { data, response } = await send(client(attempts), call);
    const requestId = response?.headers.get('batchd-request-id') ?? null;
    return { ok: true, data, request_id: requestId, attempts };
  } catch (err) {
    if (!(err instanceof Anthropic.APIError)) throw err;
    const headers = err.headers ? Object.fromEntries(err.headers.entries()) : {};
    return {
      ok: false,
      error: { class: err.constructor.name, status: err.status ?? null, body: err.error ?? null,
               headers },
      attempts,
    };
  }
}

const calls = plan.calls ?? [];
const results = [];
if (plan.parallel) {
  results.push(...(await Promise.all(calls.map(run))));
} else {
  for (const call of calls) results.push(await run(call));
}
process.stdout.write(JSON.stringify({ calls: results }) + '\n');
