log "starting on port $(port_of "$@")"
exec httpd -f -p "$(port_of "$@")" -h /opt/app/assets
