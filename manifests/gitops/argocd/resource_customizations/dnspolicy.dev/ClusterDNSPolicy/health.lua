-- Argo CD health for dnspolicy.dev/ClusterDNSPolicy (kstatus conditions).
-- Install under argocd-cm: resource.customizations.health.dnspolicy.dev_ClusterDNSPolicy
local hs = {status = "Progressing", message = "Waiting for dnspolicy to reconcile"}
if obj.metadata.deletionTimestamp ~= nil then
  -- The finalizer holds the policy until its stanzas are out of the Corefile.
  hs.message = "Deleting: dnspolicy is taking this policy's stanzas out of the Corefile"
  return hs
end
if obj.status == nil then
  return hs
end
if obj.status.observedGeneration == nil or obj.metadata.generation == nil
   or obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "dnspolicy has not observed the latest spec yet"
  return hs
end
local conditions = obj.status.conditions or {}
for _, c in ipairs(conditions) do
  if c.type == "Stalled" and c.status == "True" then
    return {status = "Degraded", message = (c.reason or "Stalled") .. ": " .. (c.message or "")}
  end
end
for _, c in ipairs(conditions) do
  if c.type == "Ready" and c.status == "True" then
    return {status = "Healthy", message = c.message or "Ready"}
  end
end
for _, c in ipairs(conditions) do
  if c.type == "Ready" then
    hs.message = (c.reason or "") .. ": " .. (c.message or "")
  end
end
return hs
