module dnspolicy.local/kstatus

go 1.26
