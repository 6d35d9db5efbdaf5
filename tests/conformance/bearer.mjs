// Preloaded (`node --import`) into the MCP conformance suite, whose client takes no headers:
// every request it makes carries the daemon's token from EXAI_CONFORMANCE_TOKEN.
const token = process.env.EXAI_CONFORMANCE_TOKEN;
if (!token) {
  throw new Error("EXAI_CONFORMANCE_TOKEN is not set");
}
const originalFetch = globalThis.fetch;
globalThis.fetch = (input, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${token}`);
  return originalFetch(input, { ...init, headers });
};
