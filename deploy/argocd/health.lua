-- Argo CD health for Runner, GitLabConnection and ClusterGitLabConnection: read the Ready
-- condition, once the operator has observed the current generation.
local hs = { status = "Progressing", message = "Waiting for runner-operator" }
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Deleting: the operator removes the runner from GitLab first"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "Waiting for runner-operator to observe generation " .. generation
  return hs
end
local transient = { GitLabRateLimited = true, GitLabError = true, GitLabUnreachable = true, KubernetesError = true }
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
      hs.message = c.message or ""
    elseif transient[c.reason] then
      hs.status = "Progressing"
      hs.message = (c.reason or "") .. ": " .. (c.message or "")
    else
      hs.status = "Degraded"
      hs.message = (c.reason or "") .. ": " .. (c.message or "")
    end
    return hs
  end
end
return hs
