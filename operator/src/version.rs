//! CoreDNS versions, read from the Deployment's image tag. (Being written.)
