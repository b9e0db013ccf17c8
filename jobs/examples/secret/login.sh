#!/bin/sh
# Printing the secret is a mistake scripts make: flwd redacts it to *** in the stored log.
echo "logging in as ${FLWD_ARG_USER} with password ${FLWD_ARG_PASSWORD}"
echo "logged in"
