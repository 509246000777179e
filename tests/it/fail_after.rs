//! A GitLab client wrapper for crash tests: the n-th write reaches GitLab, then its answer is
//! lost (a timeout), as when the operator dies right after GitLab did the work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use runner_operator::controller::context::GitLabLayer;
use runner_operator::gitlab::*;
use secrecy::SecretString;

type Answer<'a, T> = BoxFuture<'a, Result<T, GitLabError>>;

struct FailAfter {
    inner: Arc<dyn GitLabApi>,
    n: usize,
    writes: Arc<AtomicUsize>,
}

impl FailAfter {
    /// Runs the write; the n-th loses its answer.
    fn write<'a, T: Send + 'a>(
        &'a self,
        endpoint: &'static str,
        call: Answer<'a, T>,
    ) -> Answer<'a, T> {
        async move {
            let answer = call.await?;
            if self.writes.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
                return Err(GitLabError::Timeout {
                    endpoint: endpoint.into(),
                    timeout: Duration::ZERO,
                });
            }
            Ok(answer)
        }
        .boxed()
    }
}

/// A layer whose clients lose the answer to the n-th GitLab write (counting across all of
/// them), and the count of writes so far.
pub fn fail_after(n: usize) -> (GitLabLayer, Arc<AtomicUsize>) {
    let writes = Arc::new(AtomicUsize::new(0));
    let w = writes.clone();
    (
        Arc::new(move |inner| {
            Arc::new(FailAfter {
                inner,
                n,
                writes: w.clone(),
            }) as Arc<dyn GitLabApi>
        }),
        writes,
    )
}

impl GitLabApi for FailAfter {
    fn get_runner(&self, id: i64) -> Answer<'_, RunnerDetails> {
        self.inner.get_runner(id)
    }
    fn update_runner<'a>(&'a self, id: i64, a: &'a RunnerAttributes) -> Answer<'a, RunnerDetails> {
        self.write("PUT /runners/:id", self.inner.update_runner(id, a))
    }
    fn delete_runner(&self, id: i64) -> Answer<'_, ()> {
        self.write("DELETE /runners/:id", self.inner.delete_runner(id))
    }
    fn create_user_runner<'a>(&'a self, r: &'a CreateUserRunner) -> Answer<'a, RunnerRegistration> {
        self.write("POST /user/runners", self.inner.create_user_runner(r))
    }
    fn register_runner<'a>(
        &'a self,
        t: &'a SecretString,
        a: &'a RunnerAttributes,
    ) -> Answer<'a, RunnerRegistration> {
        self.write("POST /runners", self.inner.register_runner(t, a))
    }
    fn reset_runner_token(&self, id: i64) -> Answer<'_, ResetToken> {
        self.write(
            "POST /runners/:id/reset_authentication_token",
            self.inner.reset_runner_token(id),
        )
    }
    fn list_owned_runners<'a>(&'a self, f: &'a RunnerFilter) -> Answer<'a, Vec<Runner>> {
        self.inner.list_owned_runners(f)
    }
    fn verify_runner<'a>(&'a self, token: &'a SecretString) -> Answer<'a, RunnerRegistration> {
        self.inner.verify_runner(token)
    }
    fn assign_runner<'a>(&'a self, p: &'a str, id: i64) -> Answer<'a, Runner> {
        self.write(
            "POST /projects/:id/runners",
            self.inner.assign_runner(p, id),
        )
    }
    fn unassign_runner<'a>(&'a self, p: &'a str, id: i64) -> Answer<'a, ()> {
        self.write(
            "DELETE /projects/:id/runners/:runner_id",
            self.inner.unassign_runner(p, id),
        )
    }
    fn get_project<'a>(&'a self, p: &'a str) -> Answer<'a, Project> {
        self.inner.get_project(p)
    }
    fn get_group<'a>(&'a self, g: &'a str) -> Answer<'a, Group> {
        self.inner.get_group(g)
    }
    fn list_all_runners<'a>(&'a self, f: &'a RunnerFilter) -> Answer<'a, Vec<Runner>> {
        self.inner.list_all_runners(f)
    }
    fn list_project_runners<'a>(
        &'a self,
        p: &'a str,
        f: &'a RunnerFilter,
    ) -> Answer<'a, Vec<Runner>> {
        self.inner.list_project_runners(p, f)
    }
    fn list_group_runners<'a>(
        &'a self,
        g: &'a str,
        f: &'a RunnerFilter,
    ) -> Answer<'a, Vec<Runner>> {
        self.inner.list_group_runners(g, f)
    }
    fn list_runner_managers(&self, id: i64) -> Answer<'_, Vec<RunnerManager>> {
        self.inner.list_runner_managers(id)
    }
    fn recent_runner_jobs<'a>(
        &'a self,
        id: i64,
        s: Option<&'a str>,
        l: usize,
    ) -> Answer<'a, Vec<Job>> {
        self.inner.recent_runner_jobs(id, s, l)
    }
    fn version(&self) -> Answer<'_, Version> {
        self.inner.version()
    }
    fn current_user(&self) -> Answer<'_, User> {
        self.inner.current_user()
    }
    fn access_token_self(&self) -> Answer<'_, Option<AccessTokenInfo>> {
        self.inner.access_token_self()
    }
}
