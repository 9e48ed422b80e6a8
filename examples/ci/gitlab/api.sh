# Sourced by note.sh and reviewed.sh: GitLab REST calls with the project access token.
# gitlab_api [CURL_ARGS...] PATH  prints the response of $CI_API_V4_URL/projects/ID/PATH
# (PATH "/user" is taken as is); fails the job on an HTTP error, naming it.
gitlab_api() {
  local path=${*: -1} url
  case $path in
    /*) url="$CI_API_V4_URL$path" ;;
    *) url="$CI_API_V4_URL/projects/$CI_PROJECT_ID/$path" ;;
  esac
  curl --silent --show-error --fail --location \
    --header "PRIVATE-TOKEN: $CRCTL_GITLAB_TOKEN" "${@:1:$#-1}" "$url"
}

# crctl_note_id IID: the id of the token user's newest note on merge request IID that
# holds crctl's marker line, or nothing.
crctl_note_id() {
  local bot page=1 notes id found=""
  bot=$(gitlab_api /user | python3 -c 'import json,sys; print(json.load(sys.stdin)["username"])')
  while :; do
    notes=$(gitlab_api "merge_requests/$1/notes?sort=asc&order_by=created_at&per_page=100&page=$page")
    id=$(printf '%s' "$notes" | python3 -c '
import json, sys
bot = sys.argv[1]
ids = [n["id"] for n in json.load(sys.stdin)
       if n["author"]["username"] == bot and "<!-- crctl-plan digest=" in n["body"]]
print(ids[-1] if ids else "")' "$bot")
    [ -z "$id" ] || found=$id
    [ "$(printf '%s' "$notes" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 100 ] || break
    page=$((page + 1))
  done
  echo "$found"
}
