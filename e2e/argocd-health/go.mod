module dnspolicy.local/argocd-health

go 1.25
