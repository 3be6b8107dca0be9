# Lesson 9 from a terminal: a session that waits for the greeting; one that talks at
# once, as someone typing too fast (bash writes HELO to the connection before the
# greeting came, and reads what the server says to that); then one that waits again.
set -e
mailtalk run "$LESSON/wait.mt"
exec 3<>"/dev/tcp/${MX_EXAMPLE_NET_SMTP%:*}/${MX_EXAMPLE_NET_SMTP##*:}"
printf 'HELO learner.test\r\n' >&3
read -r greeting <&3
read -r reply <&3
printf 'QUIT\r\n' >&3
read -r bye <&3
exec 3<&-
printf 'S: %s\nS: %s\nS: %s\n' "$greeting" "$reply" "$bye"
case $greeting in 554*) ;; *) exit 1 ;; esac
mailtalk run "$LESSON/wait.mt"
