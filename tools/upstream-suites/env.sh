export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GONOSUMDB=* GOFLAGS=-mod=vendor
export GOCACHE=${UPSTREAM_HARNESS:-/work/upstream-harness}/gocache GOPATH=${UPSTREAM_HARNESS:-/work/upstream-harness}/gopath
export GOTELEMETRY=off
export PATH=${UPSTREAM_HARNESS:-/work/upstream-harness}/go123/go/bin:$PATH
