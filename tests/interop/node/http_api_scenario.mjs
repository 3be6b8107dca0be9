// A whole scenario against `mailtalk serve --http`, from Node's built-in fetch (Node 18+):
// add a user, have swaks send to them, wait for the message over the API, read it,
// delete it, set a fault and see swaks refused, clear it. Prints one JSON line of what
// it saw; exits non-zero on the first surprise.
//
//   node http_api_scenario.mjs API_URL SMTP_PORT TOKEN
import { execFileSync, spawnSync } from "node:child_process";
import assert from "node:assert/strict";

const [api, smtpPort, token] = process.argv.slice(2);
const auth = { Authorization: `Bearer ${token}` };
const seen = {};

async function call(method, path, body) {
  const init = { method, headers: { ...auth } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(api + path, init);
  const text = await response.text();
  const type = response.headers.get("content-type") || "";
  return { status: response.status, body: type.startsWith("application/json") ? JSON.parse(text) : text };
}

function swaks(subject) {
  return spawnSync("swaks", ["--server", `127.0.0.1:${smtpPort}`, "--to", "erin@localhost",
    "--from", "node@example.org", "--header", `Subject: ${subject}`, "--body", "from node\n"],
    { encoding: "utf8" });
}

// Without the token: 401, as JSON.
const refused = await fetch(api + "/api/v1/users");
assert.equal(refused.status, 401);
assert.match((await refused.json()).error, /bearer token/);

let r = await call("POST", "/api/v1/users", { name: "erin", password: "node-secret-42" });
assert.equal(r.status, 201);
const waiting = call("GET", "/api/v1/users/erin/messages/wait?timeout=30&subject=from%20node");
const sent = swaks("hello from node");
assert.equal(sent.status, 0, sent.stdout + sent.stderr);
r = await waiting;
assert.equal(r.status, 200, JSON.stringify(r.body));
seen.waited = r.body.subject;
const id = r.body.id;
assert.equal(r.body.text.trim(), "from node");

r = await call("GET", `/api/v1/users/erin/messages/${id}`);
assert.equal(r.status, 200);
seen.mailer = r.body.headers.find((h) => h.name === "X-Mailer").value;
r = await call("GET", `/api/v1/users/erin/messages/${id}/raw`);
assert.equal(r.status, 200);
assert.match(r.body, /^Return-Path: <node@example\.org>/);

r = await call("DELETE", `/api/v1/users/erin/messages/${id}`);
assert.equal(r.status, 204);
r = await call("GET", "/api/v1/users/erin/messages");
assert.deepEqual(r.body.messages, []);

r = await call("POST", "/api/v1/faults", { rule: "smtp:rcpt=550 5.7.1 Refused by the node test" });
assert.equal(r.status, 201);
const refusedMail = swaks("refused");
assert.notEqual(refusedMail.status, 0);
seen.swaks_refused = refusedMail.stdout.split("\n").find((line) => line.includes("550"));
r = await call("GET", "/api/v1/faults");
seen.fired = r.body.fired;
r = await call("DELETE", "/api/v1/faults");
assert.equal(r.status, 204);
assert.equal(swaks("accepted again").status, 0);

r = await call("GET", "/api/v1/journal?since=0");
seen.deliveries = r.body.events.filter((e) => e.event === "message" && e.outcome === "delivered").length;
r = await call("GET", "/api/v1/nowhere");
assert.equal(r.status, 404);
seen.not_found = r.body.error;
console.log(JSON.stringify(seen));
