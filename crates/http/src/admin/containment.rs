//! The admin API's containment routes: contained accounts, and the
//! operator's hold and release (issue 29), through control.

use super::*;

pub(super) async fn containment_list(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    Ok(Json(ctx.control.contained().await.map_err(refused)?))
}

async fn containment_do(
    ctx: &Context,
    action: portcullis_control::AccountAction,
    account: &str,
) -> ApiResult {
    let answer = ctx.control.account(action, account).await;
    Ok(Json(answer.map_err(refused)?))
}

pub(super) async fn containment_show(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(account): Path<String>,
) -> ApiResult {
    containment_do(&ctx, portcullis_control::AccountAction::Show, &account).await
}

pub(super) async fn containment_hold(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(account): Path<String>,
) -> ApiResult {
    containment_do(&ctx, portcullis_control::AccountAction::Hold, &account).await
}

pub(super) async fn containment_release(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(account): Path<String>,
) -> ApiResult {
    containment_do(&ctx, portcullis_control::AccountAction::Release, &account).await
}
