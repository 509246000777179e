//! One method per Runners API endpoint. The client covers the API beyond what the controller
//! calls (runner-token endpoints, verify, registration-token resets, job listings): it is a
//! library for tools built on it, and the GitLab emulator's fidelity is checked through it.

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{Auth, GitLabClient, PER_PAGE, segment};
use crate::gitlab::error::GitLabError;
use crate::gitlab::types::*;

impl GitLabClient {
    // ---- Runner lists ----

    /// `GET /runners`: runners the token's user owns or administers (never instance runners).
    pub async fn list_owned_runners(
        &self,
        filter: &RunnerFilter,
    ) -> Result<Vec<Runner>, GitLabError> {
        self.get_all("GET /runners", "runners", filter).await
    }

    /// `GET /runners/all`: every runner (admins and auditors).
    pub async fn list_all_runners(
        &self,
        filter: &RunnerFilter,
    ) -> Result<Vec<Runner>, GitLabError> {
        self.get_all("GET /runners/all", "runners/all", filter)
            .await
    }

    /// `GET /projects/:id/runners`; `project` is an id or a full path.
    pub async fn list_project_runners(
        &self,
        project: &str,
        filter: &RunnerFilter,
    ) -> Result<Vec<Runner>, GitLabError> {
        self.get_all(
            "GET /projects/:id/runners",
            &format!("projects/{}/runners", segment(project)),
            filter,
        )
        .await
    }

    /// `GET /groups/:id/runners`; `group` is an id or a full path.
    pub async fn list_group_runners(
        &self,
        group: &str,
        filter: &RunnerFilter,
    ) -> Result<Vec<Runner>, GitLabError> {
        self.get_all(
            "GET /groups/:id/runners",
            &format!("groups/{}/runners", segment(group)),
            filter,
        )
        .await
    }

    // ---- One runner ----

    /// `GET /runners/:id`, with its projects and groups.
    pub async fn get_runner(&self, id: RunnerId) -> Result<RunnerDetails, GitLabError> {
        self.get("GET /runners/:id", &format!("runners/{id}"), &())
            .await
    }

    /// `PUT /runners/:id` with only the given attributes.
    pub async fn update_runner(
        &self,
        id: RunnerId,
        attributes: &RunnerAttributes,
    ) -> Result<RunnerDetails, GitLabError> {
        let body =
            serde_json::to_value(attributes).map_err(|e| GitLabError::Config(e.to_string()))?;
        let call = self.call_with_body(
            Method::PUT,
            "PUT /runners/:id",
            &format!("runners/{id}"),
            Some(body),
            Auth::User,
        )?;
        self.json(call).await
    }

    /// `DELETE /runners/:id`.
    pub async fn delete_runner(&self, id: RunnerId) -> Result<(), GitLabError> {
        let call = self.call_with_body(
            Method::DELETE,
            "DELETE /runners/:id",
            &format!("runners/{id}"),
            None,
            Auth::User,
        )?;
        self.empty(call).await
    }

    /// `DELETE /runners` authenticated by the runner's own token.
    pub async fn delete_runner_by_token(&self, token: &SecretString) -> Result<(), GitLabError> {
        let body = serde_json::json!({ "token": token.expose_secret() });
        let call = self.call_with_body(
            Method::DELETE,
            "DELETE /runners",
            "runners",
            Some(body),
            Auth::None,
        )?;
        self.empty(call).await
    }

    /// `GET /runners/:id/jobs` (all pages).
    pub async fn list_runner_jobs(
        &self,
        id: RunnerId,
        filter: &JobFilter,
    ) -> Result<Vec<Job>, GitLabError> {
        self.get_all(
            "GET /runners/:id/jobs",
            &format!("runners/{id}/jobs"),
            filter,
        )
        .await
    }

    /// The runner's most recent jobs (newest first), at most `limit`, optionally of one status:
    /// `GET /runners/:id/jobs?order_by=id&sort=desc`, only the pages needed.
    pub async fn recent_runner_jobs(
        &self,
        id: RunnerId,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>, GitLabError> {
        #[derive(Serialize)]
        struct Query<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<&'a str>,
            order_by: &'a str,
            sort: &'a str,
            per_page: usize,
            page: usize,
        }
        let per_page = limit.clamp(1, PER_PAGE as usize);
        let mut jobs = Vec::new();
        for page in 1.. {
            let batch: Vec<Job> = self
                .get(
                    "GET /runners/:id/jobs",
                    &format!("runners/{id}/jobs"),
                    &Query {
                        status,
                        order_by: "id",
                        sort: "desc",
                        per_page,
                        page,
                    },
                )
                .await?;
            let last = batch.len() < per_page;
            jobs.extend(batch);
            if last || jobs.len() >= limit {
                break;
            }
        }
        jobs.truncate(limit);
        Ok(jobs)
    }

    /// `GET /runners/:id/managers`.
    pub async fn list_runner_managers(
        &self,
        id: RunnerId,
    ) -> Result<Vec<RunnerManager>, GitLabError> {
        self.get(
            "GET /runners/:id/managers",
            &format!("runners/{id}/managers"),
            &(),
        )
        .await
    }

    // ---- Creation ----

    /// `POST /user/runners`: create a runner with the access token (GitLab ≥ 16.0). The answer is
    /// the only time GitLab shows the token.
    pub async fn create_user_runner(
        &self,
        request: &CreateUserRunner,
    ) -> Result<RunnerRegistration, GitLabError> {
        let body = serde_json::to_value(request).map_err(|e| GitLabError::Config(e.to_string()))?;
        let call = self.call_with_body(
            Method::POST,
            "POST /user/runners",
            "user/runners",
            Some(body),
            Auth::User,
        )?;
        self.json(call).await
    }

    /// Legacy `POST /runners` with a registration token (410 where registration tokens are off).
    pub async fn register_runner(
        &self,
        registration_token: &SecretString,
        attributes: &RunnerAttributes,
    ) -> Result<RunnerRegistration, GitLabError> {
        let mut body =
            serde_json::to_value(attributes).map_err(|e| GitLabError::Config(e.to_string()))?;
        body["token"] = serde_json::Value::String(registration_token.expose_secret().to_string());
        let call = self.call_with_body(
            Method::POST,
            "POST /runners",
            "runners",
            Some(body),
            Auth::None,
        )?;
        self.json(call).await
    }

    /// `POST /runners/verify`. Note: GitLab records a contact, so a dead runner looks online
    /// afterwards; use it only in recovery paths.
    pub async fn verify_runner(
        &self,
        token: &SecretString,
        system_id: Option<&str>,
    ) -> Result<RunnerRegistration, GitLabError> {
        let mut body = serde_json::json!({ "token": token.expose_secret() });
        if let Some(id) = system_id {
            body["system_id"] = serde_json::Value::String(id.to_string());
        }
        let call = self.call_with_body(
            Method::POST,
            "POST /runners/verify",
            "runners/verify",
            Some(body),
            Auth::None,
        )?;
        self.json(call).await
    }

    // ---- Tokens ----

    /// `POST /runners/:id/reset_authentication_token`: the old token dies at once.
    pub async fn reset_runner_token(&self, id: RunnerId) -> Result<ResetToken, GitLabError> {
        let call = self.call_with_body(
            Method::POST,
            "POST /runners/:id/reset_authentication_token",
            &format!("runners/{id}/reset_authentication_token"),
            None,
            Auth::User,
        )?;
        self.json(call).await
    }

    /// `POST /runners/reset_authentication_token` with the current runner token.
    pub async fn reset_runner_token_with_token(
        &self,
        token: &SecretString,
    ) -> Result<ResetToken, GitLabError> {
        let body = serde_json::json!({ "token": token.expose_secret() });
        let call = self.call_with_body(
            Method::POST,
            "POST /runners/reset_authentication_token",
            "runners/reset_authentication_token",
            Some(body),
            Auth::None,
        )?;
        self.json(call).await
    }

    /// `POST /runners/reset_registration_token` (instance; admin).
    pub async fn reset_instance_registration_token(&self) -> Result<ResetToken, GitLabError> {
        let call = self.call_with_body(
            Method::POST,
            "POST /runners/reset_registration_token",
            "runners/reset_registration_token",
            None,
            Auth::User,
        )?;
        self.json(call).await
    }

    /// `POST /projects/:id/runners/reset_registration_token`.
    pub async fn reset_project_registration_token(
        &self,
        project: &str,
    ) -> Result<ResetToken, GitLabError> {
        let path = format!(
            "projects/{}/runners/reset_registration_token",
            segment(project)
        );
        let call = self.call_with_body(
            Method::POST,
            "POST /projects/:id/runners/reset_registration_token",
            &path,
            None,
            Auth::User,
        )?;
        self.json(call).await
    }

    /// `POST /groups/:id/runners/reset_registration_token`.
    pub async fn reset_group_registration_token(
        &self,
        group: &str,
    ) -> Result<ResetToken, GitLabError> {
        let path = format!("groups/{}/runners/reset_registration_token", segment(group));
        let call = self.call_with_body(
            Method::POST,
            "POST /groups/:id/runners/reset_registration_token",
            &path,
            None,
            Auth::User,
        )?;
        self.json(call).await
    }

    // ---- Assignment ----

    /// `POST /projects/:id/runners`: assign a project runner to one more project.
    pub async fn assign_runner(
        &self,
        project: &str,
        runner_id: RunnerId,
    ) -> Result<Runner, GitLabError> {
        let path = format!("projects/{}/runners", segment(project));
        let call = self.call_with_body(
            Method::POST,
            "POST /projects/:id/runners",
            &path,
            Some(serde_json::json!({ "runner_id": runner_id })),
            Auth::User,
        )?;
        self.json(call).await
    }

    /// `DELETE /projects/:id/runners/:runner_id`.
    pub async fn unassign_runner(
        &self,
        project: &str,
        runner_id: RunnerId,
    ) -> Result<(), GitLabError> {
        let path = format!("projects/{}/runners/{runner_id}", segment(project));
        let call = self.call_with_body(
            Method::DELETE,
            "DELETE /projects/:id/runners/:runner_id",
            &path,
            None,
            Auth::User,
        )?;
        self.empty(call).await
    }

    // ---- Context ----

    /// `GET /projects/:id`; `project` is an id or a full path.
    pub async fn get_project(&self, project: &str) -> Result<Project, GitLabError> {
        self.get(
            "GET /projects/:id",
            &format!("projects/{}", segment(project)),
            &(),
        )
        .await
    }

    /// `GET /groups/:id`; `group` is an id or a full path.
    pub async fn get_group(&self, group: &str) -> Result<Group, GitLabError> {
        self.get(
            "GET /groups/:id",
            &format!("groups/{}", segment(group)),
            &(),
        )
        .await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, GitLabError> {
        self.get("GET /version", "version", &()).await
    }

    /// `GET /user`: who the access token belongs to.
    pub async fn current_user(&self) -> Result<User, GitLabError> {
        self.get("GET /user", "user", &()).await
    }

    /// `GET /personal_access_tokens/self`: the access token's own scopes and expiry (personal,
    /// group and project access tokens). None where GitLab lacks the endpoint (before 15.5).
    pub async fn access_token_self(&self) -> Result<Option<AccessTokenInfo>, GitLabError> {
        match self
            .get(
                "GET /personal_access_tokens/self",
                "personal_access_tokens/self",
                &(),
            )
            .await
        {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
