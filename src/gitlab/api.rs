//! The calls the controller and the read-only commands make, as a trait: the seam between them
//! and GitLab. `GitLabClient` is its one implementation (tests drive faults through the GitLab
//! emulator, not through wrappers); runner ids are typed (`RunnerId`), projects and groups are
//! named by id or full path as the API takes them.

use futures::future::BoxFuture;
use secrecy::SecretString;

use super::client::GitLabClient;
use super::error::GitLabError;
use super::types::*;

type Answer<'a, T> = BoxFuture<'a, Result<T, GitLabError>>;

/// GitLab's Runners API as the operator uses it. Implemented by [`GitLabClient`].
pub trait GitLabApi: Send + Sync {
    /// `GET /runners/:id`.
    fn get_runner(&self, id: RunnerId) -> Answer<'_, RunnerDetails>;
    /// `PUT /runners/:id` with the fields set in `attributes`.
    fn update_runner<'a>(
        &'a self,
        id: RunnerId,
        attributes: &'a RunnerAttributes,
    ) -> Answer<'a, RunnerDetails>;
    /// `DELETE /runners/:id`.
    fn delete_runner(&self, id: RunnerId) -> Answer<'_, ()>;
    /// `POST /user/runners`.
    fn create_user_runner<'a>(
        &'a self,
        request: &'a CreateUserRunner,
    ) -> Answer<'a, RunnerRegistration>;
    /// `POST /runners` with a registration token (the legacy flow).
    fn register_runner<'a>(
        &'a self,
        registration_token: &'a SecretString,
        attributes: &'a RunnerAttributes,
    ) -> Answer<'a, RunnerRegistration>;
    /// `POST /runners/:id/reset_authentication_token`.
    fn reset_runner_token(&self, id: RunnerId) -> Answer<'_, ResetToken>;
    /// `POST /runners/verify` without a `system_id`: whether GitLab accepts a runner token,
    /// and for which runner. Creates no runner manager (it does record a contact).
    fn verify_runner<'a>(&'a self, token: &'a SecretString) -> Answer<'a, RunnerRegistration>;
    /// `POST /projects/:id/runners`.
    fn assign_runner<'a>(&'a self, project: &'a str, runner_id: RunnerId) -> Answer<'a, Runner>;
    /// `DELETE /projects/:id/runners/:runner_id`.
    fn unassign_runner<'a>(&'a self, project: &'a str, runner_id: RunnerId) -> Answer<'a, ()>;
    /// `GET /projects/:id` (id or full path).
    fn get_project<'a>(&'a self, project: &'a str) -> Answer<'a, Project>;
    /// `GET /groups/:id` (id or full path).
    fn get_group<'a>(&'a self, group: &'a str) -> Answer<'a, Group>;
    /// `GET /runners`, every page: the runners the token's user owns or administers.
    fn list_owned_runners<'a>(&'a self, filter: &'a RunnerFilter) -> Answer<'a, Vec<Runner>>;
    /// `GET /runners/all`, every page.
    fn list_all_runners<'a>(&'a self, filter: &'a RunnerFilter) -> Answer<'a, Vec<Runner>>;
    /// `GET /projects/:id/runners`, every page.
    fn list_project_runners<'a>(
        &'a self,
        project: &'a str,
        filter: &'a RunnerFilter,
    ) -> Answer<'a, Vec<Runner>>;
    /// `GET /groups/:id/runners`, every page.
    fn list_group_runners<'a>(
        &'a self,
        group: &'a str,
        filter: &'a RunnerFilter,
    ) -> Answer<'a, Vec<Runner>>;
    /// `GET /runners/:id/managers`.
    fn list_runner_managers(&self, id: RunnerId) -> Answer<'_, Vec<RunnerManager>>;
    /// The most recent jobs of a runner, newest first.
    fn recent_runner_jobs<'a>(
        &'a self,
        id: RunnerId,
        status: Option<&'a str>,
        limit: usize,
    ) -> Answer<'a, Vec<Job>>;
    /// `GET /version`.
    fn version(&self) -> Answer<'_, Version>;
    /// `GET /user`.
    fn current_user(&self) -> Answer<'_, User>;
    /// `GET /personal_access_tokens/self` (None where GitLab does not offer it).
    fn access_token_self(&self) -> Answer<'_, Option<AccessTokenInfo>>;
}

impl GitLabApi for GitLabClient {
    fn get_runner(&self, id: RunnerId) -> Answer<'_, RunnerDetails> {
        Box::pin(GitLabClient::get_runner(self, id))
    }
    fn update_runner<'a>(
        &'a self,
        id: RunnerId,
        attributes: &'a RunnerAttributes,
    ) -> Answer<'a, RunnerDetails> {
        Box::pin(GitLabClient::update_runner(self, id, attributes))
    }
    fn delete_runner(&self, id: RunnerId) -> Answer<'_, ()> {
        Box::pin(GitLabClient::delete_runner(self, id))
    }
    fn create_user_runner<'a>(
        &'a self,
        request: &'a CreateUserRunner,
    ) -> Answer<'a, RunnerRegistration> {
        Box::pin(GitLabClient::create_user_runner(self, request))
    }
    fn register_runner<'a>(
        &'a self,
        registration_token: &'a SecretString,
        attributes: &'a RunnerAttributes,
    ) -> Answer<'a, RunnerRegistration> {
        Box::pin(GitLabClient::register_runner(
            self,
            registration_token,
            attributes,
        ))
    }
    fn reset_runner_token(&self, id: RunnerId) -> Answer<'_, ResetToken> {
        Box::pin(GitLabClient::reset_runner_token(self, id))
    }
    fn verify_runner<'a>(&'a self, token: &'a SecretString) -> Answer<'a, RunnerRegistration> {
        Box::pin(GitLabClient::verify_runner(self, token, None))
    }
    fn assign_runner<'a>(&'a self, project: &'a str, runner_id: RunnerId) -> Answer<'a, Runner> {
        Box::pin(GitLabClient::assign_runner(self, project, runner_id))
    }
    fn unassign_runner<'a>(&'a self, project: &'a str, runner_id: RunnerId) -> Answer<'a, ()> {
        Box::pin(GitLabClient::unassign_runner(self, project, runner_id))
    }
    fn get_project<'a>(&'a self, project: &'a str) -> Answer<'a, Project> {
        Box::pin(GitLabClient::get_project(self, project))
    }
    fn get_group<'a>(&'a self, group: &'a str) -> Answer<'a, Group> {
        Box::pin(GitLabClient::get_group(self, group))
    }
    fn list_owned_runners<'a>(&'a self, filter: &'a RunnerFilter) -> Answer<'a, Vec<Runner>> {
        Box::pin(GitLabClient::list_owned_runners(self, filter))
    }
    fn list_all_runners<'a>(&'a self, filter: &'a RunnerFilter) -> Answer<'a, Vec<Runner>> {
        Box::pin(GitLabClient::list_all_runners(self, filter))
    }
    fn list_project_runners<'a>(
        &'a self,
        project: &'a str,
        filter: &'a RunnerFilter,
    ) -> Answer<'a, Vec<Runner>> {
        Box::pin(GitLabClient::list_project_runners(self, project, filter))
    }
    fn list_group_runners<'a>(
        &'a self,
        group: &'a str,
        filter: &'a RunnerFilter,
    ) -> Answer<'a, Vec<Runner>> {
        Box::pin(GitLabClient::list_group_runners(self, group, filter))
    }
    fn list_runner_managers(&self, id: RunnerId) -> Answer<'_, Vec<RunnerManager>> {
        Box::pin(GitLabClient::list_runner_managers(self, id))
    }
    fn recent_runner_jobs<'a>(
        &'a self,
        id: RunnerId,
        status: Option<&'a str>,
        limit: usize,
    ) -> Answer<'a, Vec<Job>> {
        Box::pin(GitLabClient::recent_runner_jobs(self, id, status, limit))
    }
    fn version(&self) -> Answer<'_, Version> {
        Box::pin(GitLabClient::version(self))
    }
    fn current_user(&self) -> Answer<'_, User> {
        Box::pin(GitLabClient::current_user(self))
    }
    fn access_token_self(&self) -> Answer<'_, Option<AccessTokenInfo>> {
        Box::pin(GitLabClient::access_token_self(self))
    }
}
