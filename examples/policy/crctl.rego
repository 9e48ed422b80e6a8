# An organisation's own rule over a crctl plan (DESIGN §9's policy hook), for conftest
# or OPA: `crctl plan accounts/acme.yaml --format json > plan.json`, then
#   conftest test --policy examples/policy plan.json
#   opa eval --fail-defined -d examples/policy -i plan.json 'data.main.deny[x]'
# A plan of a file with policies carries `policy_input`: for every user an action names,
# their effective location, profile, roles, tags and the file's policies that match them.
package main

import rego.v1

# Users tagged mifid may never be given On-Demand, whatever the file's policies say.
deny contains msg if {
	some action in input.actions
	action.action in {"enable", "change"}
	action.after.product == "on-demand"
	user := input.policy_input.users[action.user]
	"mifid" in user.tags
	msg := sprintf("%s: %s is tagged mifid and may not get On-Demand", [input.account, action.user])
}

# Every user a plan touches in London must fall under at least one of the file's policies.
deny contains msg if {
	some name, user in input.policy_input.users
	user.location == "London"
	count(user.policies) == 0
	msg := sprintf("%s: %s (London) is covered by no policy", [input.account, name])
}
