//! The outbox in the admin API: how far behind the queue is, which jobs died and why, one
//! job's attempts log, and putting a failed or dead job back in the queue once its cause is
//! fixed. Reading needs the viewer role, retrying the operator role. All SQL stays in
//! `delivery::store`; these handlers parse, check the role, call, and map.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::delivery::{AttemptRow, JobRow, JobState, Outbox, OutboxSummary, Requeue};
use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::http::auth::Caller;
use crate::rules::Role;

/// Page size when `limit` is not given.
const DEFAULT_PAGE: i64 = 50;
/// Largest page a caller may ask for: enough for a dashboard, small enough that one
/// request cannot make the server read the whole table.
const MAX_PAGE: i64 = 500;

/// The `/api/v1/outbox` routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(summary))
        .routes(routes!(list_jobs))
        .routes(routes!(job))
        .routes(routes!(retry_job))
}

fn outbox(state: &AppState) -> Outbox {
    Outbox::new(state.db.clone())
}

/// Jobs per state and how long the oldest due job has waited.
#[utoipa::path(
    get,
    path = "/api/v1/outbox",
    tag = "outbox",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts per state and the queue lag", body = OutboxSummary),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the viewer role", body = ErrorBody),
    )
)]
async fn summary(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<OutboxSummary>, ApiError> {
    caller.require(Role::Viewer)?;
    let summary = outbox(&state).summary(state.clock.now_ms()).await?;
    Ok(Json(summary))
}

/// Which jobs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs in this state (`dead` lists the jobs that gave up, with their reason).
    pub state: Option<JobState>,
    /// Only jobs with a larger id: pass the previous page's `next_after`.
    pub after: Option<i64>,
    /// Jobs per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

/// One page of jobs, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobRow>,
    /// The `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Jobs in id order, optionally in one state, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/outbox/jobs",
    tag = "outbox",
    security(("bearer" = [])),
    params(JobsQuery),
    responses(
        (status = 200, description = "One page of jobs", body = JobPage),
        (status = 400, description = "A bad state, cursor or limit", body = ErrorBody),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the viewer role", body = ErrorBody),
    )
)]
async fn list_jobs(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<JobsQuery>,
) -> Result<Json<JobPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}, not {limit}"),
        ));
    }
    let jobs = outbox(&state)
        .list_jobs(query.state, query.after, limit)
        .await?;
    let full = i64::try_from(jobs.len()).is_ok_and(|len| len == limit);
    let next_after = full.then(|| jobs.last().map(|job| job.id)).flatten();
    Ok(Json(JobPage { jobs, next_after }))
}

/// One job with every attempt made on it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    pub job: JobRow,
    /// Oldest first; `abandoned` marks a call whose worker died before recording it.
    pub attempts: Vec<AttemptRow>,
}

/// One job and its attempts log.
#[utoipa::path(
    get,
    path = "/api/v1/outbox/jobs/{id}",
    tag = "outbox",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job and its attempts", body = JobDetail),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the viewer role", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
async fn job(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<JobDetail>, ApiError> {
    caller.require(Role::Viewer)?;
    let (job, attempts) = outbox(&state)
        .job(id)
        .await?
        .ok_or_else(|| no_such_job(id))?;
    Ok(Json(JobDetail { job, attempts }))
}

fn no_such_job(id: i64) -> ApiError {
    ApiError::not_found(format!("there is no outbox job {id}"))
}

/// Puts a failed or dead job back in the queue, with a fresh maximum age.
#[utoipa::path(
    post,
    path = "/api/v1/outbox/jobs/{id}/retry",
    tag = "outbox",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job, queued again", body = JobRow),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the operator role", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is neither failed nor dead", body = ErrorBody),
    )
)]
async fn retry_job(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<JobRow>, ApiError> {
    caller.require(Role::Operator)?;
    let outbox = outbox(&state);
    let max_age = state.live().rules.delivery.retry.max_age;
    match outbox.requeue(id, state.clock.now_ms(), max_age).await? {
        Requeue::Requeued => {
            tracing::info!(job.id = id, caller = %caller.name, "outbox job requeued by an operator");
        }
        Requeue::NotFound => return Err(no_such_job(id)),
        Requeue::NotFinal(current) => {
            return Err(ApiError::conflict(
                "not_retryable",
                format!(
                    "job {id} is {}; only failed or dead jobs can be retried",
                    current.as_str()
                ),
            ));
        }
    }
    let (job, _) = outbox.job(id).await?.ok_or_else(|| no_such_job(id))?;
    Ok(Json(job))
}
