// The first order, through the TypeScript client (openapi-typescript + openapi-fetch):
// stock and money, an order placed with a key and sent again after a lost answer (the
// replay), paid with `If-Match` from its ETag, an event the state does not allow (409,
// naming the allowed events), a stale `If-Match` (412), and the order's history. Prints
// the end state as one JSON line, the same in every language's scenario.
// `cargo xtask clients` generates, type-checks (tsc --strict) and runs it: node scenario.js URL

import createClient from "openapi-fetch";
import { randomUUID } from "node:crypto";
import type { paths } from "../typescript/schema.js";

const api = createClient<paths>({ baseUrl: process.argv[2] ?? "http://127.0.0.1:8080" });
const key = () => ({ "Idempotency-Key": randomUUID() });

function ok<T>(r: { data?: T; error?: unknown; response: Response }): T {
  if (r.data === undefined) throw new Error(`${r.response.status}: ${JSON.stringify(r.error)}`);
  return r.data;
}

ok(await api.POST("/inventory/{key}/restock", { params: { path: { key: "sku-1" }, header: key() }, body: { quantity: 10 } }));
ok(await api.POST("/wallet/{key}/deposit", { params: { path: { key: "acct-1" }, header: key() }, body: { amount: 1000 } }));

// Place an order; its answer is "lost" (a timeout), so it is sent again with the same key:
// the server answers with the first outcome instead of placing a second order.
const place = { params: { header: key() }, body: { sku: "sku-1", quantity: 2, account: "acct-1", amount: 300 } };
const placed = await api.POST("/orders", place);
const again = await api.POST("/orders", place);
const order = ok(placed);
if (ok(again).id !== order.id) throw new Error("the replay is not the first order");
const replayed = again.response.headers.get("Idempotent-Replayed") === "true";
const etag = placed.response.headers.get("ETag") ?? "";
const id = { id: order.id };

// Pay it, on the version we read (an event without parameters needs no body).
const paid = ok(await api.POST("/orders/{id}/pay", { params: { path: id, header: { ...key(), "If-Match": etag } } }));

// Deliver is not allowed from `paid`: a typed 409 that names what is.
const deliver = await api.POST("/orders/{id}/deliver", { params: { path: id, header: key() } });
if (deliver.response.status !== 409 || deliver.error === undefined) throw new Error(`deliver from paid: ${deliver.response.status}`);
const allowed = deliver.error.allowed ?? [];

// Ship with the version from before paying: 412, and the current version.
const ship = await api.POST("/orders/{id}/ship", {
  params: { path: id, header: { ...key(), "If-Match": etag } },
  body: { carrier: "ups" },
});
if (ship.response.status !== 412 || ship.error === undefined) throw new Error(`stale ship: ${ship.response.status}`);

const history = ok(await api.GET("/orders/{id}/transitions", { params: { path: id } }));
const stock = ok(await api.GET("/inventory/{key}", { params: { path: { key: "sku-1" } } }));
const wallet = ok(await api.GET("/wallet/{key}", { params: { path: { key: "acct-1" } } }));
// Keys in sorted order, as the Rust and Python scenarios print them.
console.log(
  JSON.stringify({
    allowed,
    available: stock.available,
    balance: wallet.balance,
    history: history.items.map((t) => t.event),
    replayed,
    stale_current_version: ship.error.current_version,
    state: paid.state,
    version: paid.version,
  }),
);
