-- Argo CD health for Runner, GitLabConnection and ClusterGitLabConnection: read the Ready
-- condition, once the operator has observed the current generation. Lua 5.1 (gopher-lua, as
-- Argo CD runs it); tested in gopher-lua and Lua 5.4.
local hs = { status = "Progressing", message = "Waiting for runner-operator" }
local conditions = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local function said(c)
  return (c.reason or "") .. ": " .. (c.message or "")
end
local ready = conditions["Ready"]
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  if ready ~= nil and ready.reason == "DeletionBlocked" then
    -- Stuck until someone acts: the message names the way out.
    hs.status = "Degraded"
    hs.message = said(ready)
  else
    hs.message = "Deleting: the operator removes the runner from GitLab first"
  end
  return hs
end
if ready == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "Waiting for runner-operator to observe generation " .. generation
  return hs
end
-- kstatus' conditions, as the operator sets them (src/controller/standing.rs): Stalled needs a
-- person, Reconciling clears by itself. Flux and kpt read the same two, so both tools agree.
local stalled, reconciling = conditions["Stalled"], conditions["Reconciling"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled)
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = said(reconciling)
  return hs
end
-- Statuses written before those conditions: the same rules from Ready. Reasons that clear
-- without anyone acting: GitLab busy or unreachable for a while, or a connection (or its
-- Secret) that is not there yet, as in the first sync of an application. Kept equal to
-- standing::TRANSIENT by a test.
local transient = {
  GitLabRateLimited = true, GitLabError = true, GitLabUnreachable = true,
  KubernetesError = true, ConnectionNotReady = true,
}
if ready.status == "True" then
  -- Ready, but something will break it at the next token rotation, or a consumer is missing.
  local conflict = conditions["TokenRotationConflict"]
  local consumers = conditions["ConsumersReady"]
  if conflict ~= nil and conflict.status == "True" then
    hs.status = "Degraded"
    hs.message = said(conflict)
  elseif consumers ~= nil and consumers.status == "False" then
    hs.status = "Degraded"
    hs.message = said(consumers)
  else
    hs.status = "Healthy"
    hs.message = ready.message or ""
  end
elseif transient[ready.reason] then
  hs.status = "Progressing"
  hs.message = said(ready)
else
  hs.status = "Degraded"
  hs.message = said(ready)
end
return hs
