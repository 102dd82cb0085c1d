// Must NOT type-check: a state-changing call without its Idempotency-Key. `cargo xtask
// clients` runs tsc on this file and requires it to fail on its call (line 7), and only there.
import createClient from "openapi-fetch";
import type { paths } from "../typescript/schema.js";

const api = createClient<paths>({ baseUrl: "http://127.0.0.1:8080" });
await api.POST("/orders", { body: { sku: "sku-1", quantity: 1, account: "acct-1", amount: 1 } });
