//! The first order, through the Rust client: stock and money, an order placed with a key
//! and sent again after a lost answer (the replay), paid with `If-Match` from its ETag, an
//! event the state does not allow (409, naming the allowed events), a stale `If-Match`
//! (412), and the order's history. Prints the end state as one JSON line, the same in every
//! language's scenario. `cargo run -p ordo-client --example scenario -- http://127.0.0.1:8080`

use ordo_client::types::{
    InventoryRestock, NoParams, OrderCreate, OrderShip, PayOrderIdempotencyKey, PlaceOrderIdempotencyKey,
    WalletDeposit,
};
use ordo_client::{Client, Error};

/// A fresh key for each request (a UUID, as clients send them).
fn key<K: std::str::FromStr>() -> K
where
    K::Err: std::fmt::Debug,
{
    uuid::Uuid::now_v7().to_string().parse().expect("a UUID fits the key's pattern")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    let api = Client::new(&url);

    api.restock_inventory("sku-1", &key(), &InventoryRestock { quantity: 10.try_into()? }).await?;
    api.deposit_wallet("acct-1", &key(), &WalletDeposit { amount: 1000.try_into()? }).await?;

    // Place an order; its answer is "lost" (a timeout), so it is sent again with the same
    // key: the server answers with the first outcome instead of placing a second order.
    let place_key: PlaceOrderIdempotencyKey = key();
    let order = OrderCreate {
        sku: "sku-1".try_into()?,
        quantity: 2.try_into()?,
        account: "acct-1".try_into()?,
        amount: 300,
        carrier: None,
        tracking: None,
    };
    let placed = api.place_order(&place_key, &order).await?;
    let again = api.place_order(&place_key, &order).await?;
    let replayed = again.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    assert_eq!(again.id, placed.id, "the replay is the first order");
    let id = placed.id.clone();
    let etag = placed.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();

    // Pay it, on the version we read.
    let pay_key: PayOrderIdempotencyKey = key();
    let paid = api.pay_order(&id, &pay_key, Some(&etag.parse()?), &NoParams(Default::default())).await?;

    // Deliver is not allowed from `paid`: a typed 409 that names what is.
    let allowed = match api.deliver_order(&id, &key(), None, &NoParams(Default::default())).await {
        Err(Error::ErrorResponse(problem)) if problem.status() == 409 => problem.allowed.clone(),
        other => panic!("deliver from paid: {other:?}"),
    };

    // Ship with the version from before paying: 412, and the current version.
    let ship = OrderShip { carrier: "ups".to_string(), tracking: None };
    let stale_current = match api.ship_order(&id, &key(), Some(&etag.parse()?), &ship).await {
        Err(Error::ErrorResponse(problem)) if problem.status() == 412 => problem.current_version,
        other => panic!("ship with a stale If-Match: {other:?}"),
    };

    let history = api.get_order_transitions(&id, None, None).await?;
    let stock = api.get_inventory("sku-1").await?;
    let wallet = api.get_wallet("acct-1").await?;
    let summary = serde_json::json!({
        "replayed": replayed,
        "state": paid.state,
        "version": paid.version,
        "allowed": allowed,
        "stale_current_version": stale_current,
        "history": history.items.iter().map(|t| t.event.clone()).collect::<Vec<_>>(),
        "available": stock.available,
        "balance": wallet.balance,
    });
    println!("{summary}");
    Ok(())
}
