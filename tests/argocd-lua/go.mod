// Runs deploy/argocd/health.lua in gopher-lua, the Lua 5.1 VM Argo CD embeds (see main.go).
module runner-operator.dev/argocd-lua

go 1.25.0

require github.com/yuin/gopher-lua v1.1.1
